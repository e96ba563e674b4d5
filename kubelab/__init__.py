"""kubelab: Kubeflow-style training and serving from inside JupyterHub.

``import kubelab`` is the Python API of the notebook side; ``%load_ext kubelab`` loads the magics.
This module is a facade: it imports its parts lazily, so importing it in the hub pulls in nothing
of the notebook side and vice versa.
"""

from __future__ import annotations

import os

from kubelab._version import __version__

# The hub side (``spawner/``) and the notebook side (``labextension/``) are top-level folders of the
# source tree; the wheel installs them as ``kubelab.spawner`` and ``kubelab.labextension`` (see
# ``pyproject.toml``). In a source checkout (an editable install, or pytest run from the repository)
# they sit one level up, so let this package find its subpackages there too.
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_checkout, "pyproject.toml")) and os.path.isdir(
    os.path.join(_checkout, "spawner")
):
    __path__.append(_checkout)  # type: ignore[name-defined]  # noqa: F821

__all__ = ["__version__"]
