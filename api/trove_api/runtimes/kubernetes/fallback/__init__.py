"""The agentless fallback: file operations and snapshots as fresh pod execs of a POSIX sh script."""
