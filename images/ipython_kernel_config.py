# kubelab's magics (%train, %%train, %jobs, ...) in every kernel, as if each notebook began with
# `%load_ext kubelab`. The images copy this file to /etc/ipython/, IPython's system-wide config
# directory, so it applies to every user and every Python environment in the image; a user's own
# ~/.ipython/profile_default/ipython_kernel_config.py can still add to it.
c = get_config()  # noqa: F821 -- IPython's config loader provides get_config
c.InteractiveShellApp.extensions = ["kubelab"]
