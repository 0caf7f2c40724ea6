"""The serving deployments' tests use the serving core's tiny base and random adapters."""

from tests.serving.conftest import random_adapter, section

__all__ = ["random_adapter", "section"]
