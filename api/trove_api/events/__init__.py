"""Events: the envelope, the durable event log, and (later) webhook delivery and SSE."""
