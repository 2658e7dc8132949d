"""Business logic above the Runtime line: auth, namespaces, files, exec, keys, workspaces."""
