"""Business logic above the Runtime line: auth, namespaces, files, exec, snapshots, keys, webhooks,
device login, events emitted and read, and the crash-safety intents and recovery."""
