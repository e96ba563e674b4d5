"""Hub side of kubelab: the profile chooser spawners (Kubernetes and local).

Importable as ``kubelab.spawner`` only: the checkout's top-level ``spawner/`` folder is the same
files (``kubelab/spawner`` links to it), and a second name would make second copies of every
module and exception class (docs/architecture.md).
"""

if __name__ != "kubelab.spawner":
    raise ImportError(f"import kubelab's hub side as kubelab.spawner, not as {__name__!r}")
