"""kubelab: Kubeflow-style training and serving from inside JupyterHub.

``import kubelab`` is the Python API of the notebook side; ``%load_ext kubelab`` loads the magics.
This module is a facade: it imports its parts lazily, so importing it in the hub pulls in nothing
of the notebook side and vice versa.
"""

from __future__ import annotations

from kubelab._version import __version__

__all__ = ["__version__"]
