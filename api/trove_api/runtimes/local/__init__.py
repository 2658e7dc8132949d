"""The local runtime: a directory per namespace, each command in a bubblewrap sandbox."""
