"""Hub side of kubelab: the profile chooser spawners (Kubernetes and local)."""
