"""Events: the envelope and the durable event log, its feed, the SSE hub, and webhook delivery."""
