"""Pydantic wire models, named as in WIRE.md."""
