"""Internals of :mod:`kernels`: not part of the public API."""
