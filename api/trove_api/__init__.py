"""The Trove HTTP API: FastAPI app, services, runtimes, stores and events."""
