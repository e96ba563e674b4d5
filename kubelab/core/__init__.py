"""The shared core of kubelab: config schema, Kubernetes object builders, job backends.

The core imports neither the hub side (kubelab.spawner) nor the notebook side
(kubelab.labextension); an import-linter contract checks that.
"""
