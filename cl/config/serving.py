"""The HTTP edge: Serve's proxy and replicas (``[serve]``) and who may call it (``[auth]``)."""

from __future__ import annotations

from dataclasses import dataclass

from cl.config.errors import gpu_count_problem, port_problem

__all__ = ["DTYPES", "ROLES", "AuthConfig", "ServeConfig"]

DTYPES = ("auto", "bfloat16", "float16", "float32")
"""Values of ``serve.dtype``; ``auto`` is bfloat16 on CUDA and float32 on the CPU."""


@dataclass
class ServeConfig:
    """The HTTP edge (Ray Serve's proxy) and the model replicas behind it."""

    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    replica_num_cpus: float = 1.0
    num_gpus: float | str = "auto"  # GPUs per model replica (0.5: two share one); "auto": a share of Ray's, 0 without
    dtype: str = "auto"  # the replica's weights: auto (bfloat16 on CUDA, float32 on CPU), bfloat16, float16, float32
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.005
    adapter_cache_size: int = 4  # adapter versions a replica holds at once (LRU)
    serve_new_versions: bool = True  # until rollout: each published version serves at once
    max_text_chars: int = 4096
    max_new_tokens: int = 256
    max_body_bytes: int = 1_048_576  # larger request bodies get 413 before they are parsed

    def problems(self) -> list[str]:
        out = [port_problem("serve.port", self.port)]
        for name in (
            "replicas",
            "max_batch_size",
            "adapter_cache_size",
            "max_text_chars",
            "max_new_tokens",
            "max_body_bytes",
        ):
            if getattr(self, name) < 1:
                out.append(f"serve.{name}: {getattr(self, name)} is too small; use 1 or more")
        if self.batch_wait_timeout_s < 0:
            out.append("serve.batch_wait_timeout_s: must be >= 0 seconds")
        out.append(gpu_count_problem("serve.num_gpus", self.num_gpus))
        if self.dtype not in DTYPES:
            out.append(f"serve.dtype: {self.dtype!r} is unknown; use {', '.join(DTYPES)} (auto: bfloat16 on CUDA)")
        return [p for p in out if p]


ROLES = ("predict", "feedback", "admin")


@dataclass
class AuthConfig:
    """Who may call the HTTP API: API keys with roles (see ``docs/security.md``).

    Keys live hashed in ``keys_file``; ``cl keys create|list|revoke`` manage them. Admin
    actions and auth failures are appended to ``audit_file`` and announced on ``cl.events``.
    """

    enabled: bool = True
    keys_file: str = ""  # default <state_dir>/keys.json
    audit_file: str = ""  # default <state_dir>/audit/security.jsonl
    feedback_rate_per_s: float = 100.0  # feedback a key may post per second, sustained (429 above it)
    feedback_burst: int = 200  # feedback a key may post at once before the rate applies

    def problems(self) -> list[str]:
        out = []
        if not self.feedback_rate_per_s > 0:
            out.append(f"auth.feedback_rate_per_s: {self.feedback_rate_per_s} must be positive, e.g. 100")
        if self.feedback_burst < 1:
            out.append(f"auth.feedback_burst: {self.feedback_burst} is too small; use 1 or more")
        return out
