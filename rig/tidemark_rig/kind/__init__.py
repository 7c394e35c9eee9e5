"""`tidemark dev kind`: a real kind cluster with three zones on a machine without a registry."""
