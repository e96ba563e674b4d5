"""Notebook side of kubelab: magics, widgets, the jupyter-server extension and the lab panel.

Importable as ``kubelab.labextension`` only (see kubelab.spawner's docstring for why).
"""

if __name__ != "kubelab.labextension":
    raise ImportError(f"import kubelab's notebook side as kubelab.labextension, not as {__name__!r}")
