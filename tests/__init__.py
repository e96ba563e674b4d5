"""kubelab's own tests, shipped in the wheel so that kubelab.tests.kubeapi (the Kubernetes API
test server) can be reused."""
