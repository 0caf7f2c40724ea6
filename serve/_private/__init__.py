"""Internals of the serving layer; not part of its public API."""
