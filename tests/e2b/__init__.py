# Raw httpx calls in these tests wait this long: on Kubernetes a sandbox's first call waits for
# its pod (up to TROVE_K8S_READY_TIMEOUT_S), past httpx's 5 s default.
WAIT_S = 60
