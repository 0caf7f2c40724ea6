"""Latency, throughput and peak memory of the served model, per batch size (``cl profile``).

:func:`profile_model` builds the model from a config, fills ``adapters`` slots of its adapter
bank the way a serving replica does (an :class:`~cl.serving.adapter_cache.AdapterCache` over
``load_adapter_state``), and times two things per batch size, each over ``iters`` timed
iterations after ``warmup`` untimed ones:

* one forward of the ``classify`` head on ``(B, seq_len)`` tokens;
* one greedy generation of exactly ``new_tokens`` tokens with the ``lm`` head (prefill of the
  ``seq_len``-token prompt included, EOS ignored so every iteration makes the same tokens).

Rows mix the adapters round-robin in a shuffled order, as the champion's and the
challenger's requests share one batch; ``adapters=0`` sends every row to the base (adapter
id ``-1``, what the replica sends for version ``"base"``).

Example:
    >>> from cl.model import ModelConfig
    >>> rows = profile_model(ModelConfig.preset("tiny"), [1, 3], seq_len=8, new_tokens=2,
    ...                      adapters=2, iters=3, warmup=1, device="cpu")
    >>> [(r.batch_size, r.adapters) for r in rows]
    [(1, 1), (3, 2)]
    >>> all(r.forward.p50_ms <= r.forward.p95_ms <= r.forward.p99_ms for r in rows)
    True
    >>> rows[1].forward.tokens_per_s == 3 * 8 / (rows[1].forward.mean_ms / 1000)
    True
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cl.model import ModelConfig, MoETransformer
from cl.model.adapters import banked_tensors
from cl.serving.adapter_cache import AdapterCache

__all__ = ["Measure", "ProfileRow", "format_table", "mixed_adapter_ids", "profile_model"]

CUDA_MEMORY = "cuda max_memory_allocated (peak allocated, weights included)"
CPU_MEMORY = "peak RSS growth over the timed loop (psutil, sampled every {ms:g} ms)"


@dataclass(frozen=True)
class Measure:
    """Timing of one kind of call (forward or generation) at one batch size.

    Attributes:
        p50_ms: Median latency of one call, in milliseconds.
        p95_ms: 95th percentile (numpy's linear interpolation).
        p99_ms: 99th percentile.
        mean_ms: Mean latency; the throughputs divide by it.
        tokens_per_s: ``batch × tokens per row / mean`` (``seq_len`` for a forward,
            ``new_tokens`` for a generation).
        rows_per_s: ``batch / mean``.
        peak_memory_mb: See :attr:`ProfileRow.memory`; MiB.
    """

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    tokens_per_s: float
    rows_per_s: float
    peak_memory_mb: float


@dataclass(frozen=True)
class ProfileRow:
    """The profile of one batch size.

    Attributes:
        batch_size: Rows per call.
        seq_len: Tokens per row of the forward, and of the generation's prompt.
        new_tokens: Tokens generated per row.
        adapters: Distinct adapters in the batch (0 = base only; at most ``batch_size``).
        iters: Timed iterations per measure.
        warmup: Untimed iterations before them.
        device: Where the model ran, e.g. ``"cpu"`` or ``"cuda"``.
        threads: torch's intra-op CPU threads.
        parameters: Elements in the model's state (base and every adapter slot).
        memory: How ``peak_memory_mb`` was measured.
        forward: One ``classify`` forward.
        generate: One generation of ``new_tokens`` tokens.
    """

    batch_size: int
    seq_len: int
    new_tokens: int
    adapters: int
    iters: int
    warmup: int
    device: str
    threads: int
    parameters: int
    memory: str
    forward: Measure
    generate: Measure

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping (``forward`` and ``generate`` nested)."""
        return dataclasses.asdict(self)


def mixed_adapter_ids(batch_size: int, slots: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Adapter id per row: ``slots`` round-robin, in a seeded shuffled order.

    Args:
        batch_size: Rows B.
        slots: Adapter slots to mix; empty = every row on the base (``-1``).
        seed: Seed of the shuffle.

    Returns:
        ``(B,)`` int64 ids.

    Example:
        >>> sorted(mixed_adapter_ids(5, [0, 1]).tolist()), mixed_adapter_ids(2, []).tolist()
        ([0, 0, 0, 1, 1], [-1, -1])
    """
    if not slots:
        return torch.full((batch_size,), -1, dtype=torch.long)
    ids = torch.tensor([slots[i % len(slots)] for i in range(batch_size)], dtype=torch.long)  # (B,)
    order = torch.randperm(batch_size, generator=torch.Generator().manual_seed(seed))
    return ids[order]


def profile_model(
    model_cfg: ModelConfig,
    batch_sizes: Sequence[int],
    *,
    seq_len: int = 64,
    new_tokens: int = 16,
    adapters: int = 0,
    iters: int = 50,
    warmup: int = 5,
    device: str | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 5.0,
) -> list[ProfileRow]:
    """Measure latency, throughput and peak memory for each batch size.

    Args:
        model_cfg: The model; its adapter bank grows to ``adapters`` slots if it is smaller.
        batch_sizes: One row per size, in this order.
        seq_len: Tokens per row (the forward's input and the generation's prompt).
        new_tokens: Tokens generated per row.
        adapters: Distinct LoRA adapters mixed in each batch (0 = base only).
        iters: Timed iterations per measure.
        warmup: Untimed iterations before them.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default CUDA if available, else CPU.
        seed: Seeds the weights, the adapters, the tokens and the row order.
        progress: Called with a progress line at most every ``progress_every_s`` seconds.
        progress_every_s: Seconds between progress lines.

    Returns:
        One :class:`ProfileRow` per batch size.

    Raises:
        ValueError: Every bad argument at once, each with its fix.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check(model_cfg, batch_sizes, seq_len, new_tokens, adapters, iters, warmup, device)
    dev = torch.device(device)
    model, slots = _build(model_cfg, adapters, seed, dev)
    parameters = sum(t.numel() for t in model.state_dict().values())
    memory = CUDA_MEMORY if dev.type == "cuda" else CPU_MEMORY.format(ms=_RssPeak.interval_s * 1000)
    tick = _Ticker(progress, progress_every_s)
    rows = []
    g = torch.Generator().manual_seed(seed)
    for b in batch_sizes:
        tokens = torch.randint(0, 256, (b, seq_len), generator=g).to(dev)  # (B, T) bytes, no padding
        ids = mixed_adapter_ids(b, slots[:b], seed).to(dev)  # (B,)
        with torch.inference_mode():
            fwd = _measure(
                lambda: model(tokens=tokens, adapter_ids=ids, head="classify"),
                b * seq_len,
                b,
                iters,
                warmup,
                dev,
                lambda i: tick(f"batch {b}: forward {i}/{iters}"),
            )
            gen = _measure(
                lambda: model.generate(tokens, max_new_tokens=new_tokens, adapter_ids=ids, stop_at_eos=False),
                b * new_tokens,
                b,
                iters,
                warmup,
                dev,
                lambda i: tick(f"batch {b}: generate {i}/{iters}"),
            )
        rows.append(
            ProfileRow(
                b,
                seq_len,
                new_tokens,
                len(set(ids.tolist()) - {-1}),
                iters,
                warmup,
                str(dev),
                torch.get_num_threads(),
                parameters,
                memory,
                fwd,
                gen,
            )
        )
    return rows


def format_table(rows: Sequence[ProfileRow]) -> str:
    """The rows as a fixed-width text table, one line per batch size."""
    cols = f"{'p50 / p95 / p99 ms':>30} {'tokens/s':>10} {'rows/s':>8} {'peak MB':>8}"
    lines = [f"{'':>5}  {'forward (classify)':<{len(cols)}}  generate (lm)", f"{'batch':>5}  {cols}  {cols}"]
    lines.append("-" * len(lines[1]))
    for r in rows:
        cells = [
            f"{m.p50_ms:>8.2f} / {m.p95_ms:>8.2f} / {m.p99_ms:>8.2f} {m.tokens_per_s:>10,.0f} "
            f"{m.rows_per_s:>8,.1f} {m.peak_memory_mb:>8.1f}"
            for m in (r.forward, r.generate)
        ]
        lines.append(f"{r.batch_size:>5}  " + "  ".join(cells))
    return "\n".join(lines)


def _check(
    cfg: ModelConfig,
    batch_sizes: Sequence[int],
    seq_len: int,
    new_tokens: int,
    adapters: int,
    iters: int,
    warmup: int,
    device: str,
) -> None:
    def count(name: str, value: object, minimum: int) -> list[str]:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return [] if ok else [f"{name}={value!r}: give an int >= {minimum}"]

    p = [] if batch_sizes else ["batch_sizes is empty: give at least one, e.g. [1, 8, 32]"]
    for b in batch_sizes:
        p += count("batch size", b, 1)
    p += count("seq_len", seq_len, 1) + count("new_tokens", new_tokens, 1) + count("adapters", adapters, 0)
    p += count("iters", iters, 1) + count("warmup", warmup, 0)
    if not p and seq_len + 1 > cfg.max_seq_len:
        p.append(
            f"seq_len={seq_len}: classify adds a CLS token and max_seq_len={cfg.max_seq_len}; "
            f"give seq_len <= {cfg.max_seq_len - 1}"
        )
    if not p and seq_len + new_tokens > cfg.max_seq_len:
        p.append(
            f"seq_len={seq_len} + new_tokens={new_tokens} exceeds max_seq_len={cfg.max_seq_len}; shorten one of them"
        )
    if adapters and cfg.lora_rank == 0:
        p.append(f"adapters={adapters} but the model has lora_rank=0 (no adapters); use adapters=0")
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        p.append(f"device={device!r} is unknown; use 'cpu' or 'cuda'")
    elif kind == "cuda" and not torch.cuda.is_available():
        p.append(f"device={device!r} but torch sees no CUDA device; use device='cpu'")
    if p:
        raise ValueError("cannot profile: " + "; ".join(p))


def _build(cfg: ModelConfig, adapters: int, seed: int, dev: torch.device) -> tuple[MoETransformer, list[int]]:
    """The model in eval mode on ``dev``, with ``adapters`` random adapters installed like a replica does."""
    if adapters > cfg.n_adapter_slots:
        cfg = cfg.replace(n_adapter_slots=adapters)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MoETransformer(cfg).eval()
        trained = {k for k, t in banked_tensors(model).items() if isinstance(t, torch.nn.Parameter)}

        def load(version: str) -> dict[str, torch.Tensor]:  # a made-up trained adapter: A and B non-zero
            return {
                k: torch.randn_like(t) * cfg.init_std if k in trained else t for k, t in model.adapter_state(0).items()
            }

        cache = AdapterCache(cfg.n_adapter_slots, install=model.load_adapter_state)
        slots = cache.assign([str(v) for v in range(1, adapters + 1)], load)
    return model.to(dev), list(slots.values())


def _measure(
    call: Callable[[], object],
    tokens: int,
    rows: int,
    iters: int,
    warmup: int,
    dev: torch.device,
    tick: Callable[[int], None],
) -> Measure:
    """Time ``call``; throughputs count ``tokens`` and ``rows`` per call."""
    cuda = dev.type == "cuda"
    for _ in range(warmup):
        call()
    times = []
    with _PeakMemory(dev) as peak:
        for i in range(iters):
            if cuda:
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            call()
            if cuda:
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - start)
            tick(i + 1)
    ms = np.asarray(times) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    mean_s = float(ms.mean()) / 1000.0
    return Measure(float(p50), float(p95), float(p99), float(ms.mean()), tokens / mean_s, rows / mean_s, peak.mb)


class _PeakMemory:
    """Peak memory over a ``with`` block: CUDA's allocator peak, or the RSS growth on CPU."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.mb = 0.0
        self._rss = None if dev.type == "cuda" else _RssPeak()

    def __enter__(self) -> _PeakMemory:
        if self._rss is None:
            torch.cuda.synchronize(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)
        else:
            self._rss.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rss is None:
            torch.cuda.synchronize(self.dev)
            self.mb = torch.cuda.max_memory_allocated(self.dev) / 2**20
        else:
            self._rss.__exit__()
            self.mb = self._rss.growth / 2**20


class _RssPeak:
    """Samples this process's RSS from a thread; ``growth`` = peak minus the RSS at entry, bytes."""

    interval_s = 0.001

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = self.growth = 0

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> _RssPeak:
        self.start = self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.start


class _Ticker:
    """Passes a line to ``say`` at most every ``every_s`` seconds."""

    def __init__(self, say: Callable[[str], None] | None, every_s: float) -> None:
        self.say, self.every_s = say, every_s
        self.last = time.monotonic()

    def __call__(self, line: str) -> None:
        if self.say is not None and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self.say(line)
