"""Notebook side of kubelab: magics, widgets, the jupyter-server extension and the lab panel."""
