"""Errors the stream layer raises, each saying what failed and what to do."""

from __future__ import annotations


class ProduceError(RuntimeError):
    """An event could not be written to Kafka with the required acknowledgements."""
