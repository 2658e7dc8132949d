"""The Kubernetes runtime: a TroveNamespace per namespace, exec and files through the pod exec API."""
