"""The Trove operator: kopf handlers that give each TroveNamespace a PVC-backed sandbox pod."""
