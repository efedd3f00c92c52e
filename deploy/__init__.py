"""Deployment: local servers for development and tests (local/), Kubernetes manifests (k8s/)."""
