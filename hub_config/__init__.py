"""Admin configuration shipped with kubelab: example kubelab.yaml, jupyterhub_config.py, Helm values."""
