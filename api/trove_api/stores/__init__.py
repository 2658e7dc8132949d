"""Durable state: the metadata database (and, later, snapshot stores)."""
