"""The serving core: batched predictions and generations over a bank of adapter versions.

What a model replica (``serve/``) wraps: input checks and batched inference, the LRU cache of
adapter versions in the model's slots, and the profiler that measures them.
"""

from cl.serving.adapter_cache import BASE_VERSION, AdapterCache, Eviction
from cl.serving.inference import InputError, Limits, generate_batch, predict_batch

__all__ = ["BASE_VERSION", "AdapterCache", "Eviction", "InputError", "Limits", "generate_batch", "predict_batch"]
