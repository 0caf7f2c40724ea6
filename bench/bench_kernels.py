"""Kernel benchmarks: timings and ratios measured side by side in one run.

Usage (from the repository root)::

    python -m bench.bench_kernels            # CPU: torch references vs naive loops
    python -m bench.bench_kernels --gpu      # also the Triton launchers on CUDA

CPU timings interleave the contenders round by round and report the minimum
and the median of the per-round means, so load from other processes hits all
of them alike; on a shared machine the minimum is the steadier figure (noise
only ever adds time). GPU
timings use ``triton.testing.do_bench`` (median, CUDA events) and, for the fused
MoE at decode sizes, also a CUDA-graph replay (``do_bench_cudagraph``), which
removes the host launch overhead of the ~10 small torch ops that align pairs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from kernels import fused_moe, fused_moe_ref, multi_lora, multi_lora_ref

# ---------------------------------------------------------------------- baselines


def moe_masked_loop(x, w13, w2, topk_weights, topk_ids):
    """Per-expert loop: boolean-mask the tokens routed to ``e``, compute only those."""
    out = torch.zeros_like(x)
    f = w13.shape[1] // 2
    for e in range(w13.shape[0]):
        hit = topk_ids == e  # (T, k)
        mask = hit.any(-1)  # (T,)
        xe = x[mask]  # (n, d)
        gu = xe @ w13[e].T  # (n, 2f): gate and up fused, as in our reference
        y = (F.silu(gu[:, :f]) * gu[:, f:]) @ w2[e].T  # (n, d)
        out[mask] += y * (topk_weights * hit).sum(-1)[mask][:, None]
    return out


def moe_dense(x, w13, w2, topk_weights, topk_ids):
    """Every expert on every token, then a dense (T, E) routing matrix."""
    f = w13.shape[1] // 2
    gu = torch.matmul(x, w13.mT)  # (E, T, 2f)
    y = torch.matmul(F.silu(gu[..., :f]) * gu[..., f:], w2.mT)  # (E, T, d)
    route = torch.zeros(x.shape[0], w13.shape[0], dtype=x.dtype, device=x.device)
    route.scatter_add_(1, topk_ids, topk_weights.to(x.dtype))  # (T, E)
    return torch.einsum("te,etd->td", route, y)


def lora_adapter_loop(x, a, b, ids, scale, base):
    """Per-adapter loop: boolean-mask the rows of adapter ``l``."""
    out = base.clone()
    for l in range(a.shape[0]):
        mask = ids == l
        out[mask] += scale * (x[mask] @ a[l].T) @ b[l].T
    return out


def routing(T: int, E: int, k: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-top-k routing of random logits: ``(T, k)`` weights and distinct expert ids."""
    weights, ids = torch.topk(torch.randn(T, E, device=device).softmax(-1), k)
    return (weights / weights.sum(-1, keepdim=True)).to(dtype), ids


# ------------------------------------------------------------------------ timing


def time_interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, target_s: float
) -> dict[str, tuple[float, float]]:
    """``(min, median)`` over ``rounds`` of each function's mean call time (seconds), contenders interleaved."""
    reps = {}
    for name, fn in fns.items():
        fn()  # warm up
        start = time.perf_counter()
        fn()
        reps[name] = max(1, int(target_s / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            start = time.perf_counter()
            for _ in range(reps[name]):
                fns[name]()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return {name: (min(s), statistics.median(s)) for name, s in samples.items()}


def print_table(title: str, times: dict[str, tuple[float, float]], baseline: str, note: str = "") -> None:
    """Min and median per variant, and the baseline's time over each (speed-up, higher is faster)."""
    print(f"\n{title}")
    print(f"  {'variant':<44} {'min':>10} {'median':>10}   {'speed-up vs ' + baseline + ' (min / median)'}")
    base_min, base_med = times[baseline]
    for name, (t_min, t_med) in times.items():
        print(
            f"  {name:<44} {t_min * 1e3:>7.3f} ms {t_med * 1e3:>7.3f} ms   "
            f"{base_min / t_min:>6.2f}x / {base_med / t_med:.2f}x"
        )
    if note:
        print(f"  {note}")


# --------------------------------------------------------------------------- CPU


def bench_cpu(rounds: int) -> None:
    g = torch.Generator().manual_seed(0)
    T, E, k, d, f = 2048, 8, 2, 256, 512
    x = torch.randn(T, d, generator=g)
    w13 = torch.randn(E, 2 * f, d, generator=g) / d**0.5
    w2 = torch.randn(E, d, f, generator=g) / f**0.5
    wts, ids = routing(T, E, k, "cpu", torch.float32)
    ref = fused_moe_ref(x, w13, w2, wts, ids)
    torch.testing.assert_close(moe_masked_loop(x, w13, w2, wts, ids), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(moe_dense(x, w13, w2, wts, ids), ref, rtol=1e-4, atol=1e-4)
    times = time_interleaved(
        {
            "fused_moe_ref (sort + per-expert matmul)": lambda: fused_moe_ref(x, w13, w2, wts, ids),
            "per-expert masked loop": lambda: moe_masked_loop(x, w13, w2, wts, ids),
            "dense: every expert on every token": lambda: moe_dense(x, w13, w2, wts, ids),
        },
        rounds,
        target_s=0.3,
    )
    print_table(
        f"MoE layer, fp32 forward, T={T} E={E} k={k} d={d} f={f}",
        times,
        "per-expert masked loop",
        note="goal: reference >= 2x the masked loop",
    )

    for r in (8, 16):
        bench_cpu_lora(g, rounds, n=256, L=16, d=256, r=r)


def bench_cpu_lora(g: torch.Generator, rounds: int, *, n: int, L: int, d: int, r: int) -> None:
    x = torch.randn(n, d, generator=g)
    W = torch.randn(d, d, generator=g) / d**0.5
    a = torch.randn(L, r, d, generator=g) / d**0.5
    b = torch.randn(L, d, r, generator=g) / r**0.5
    lids = torch.randperm(n, generator=g) % L  # L distinct adapters, n / L rows each, shuffled
    base = x @ W.T
    torch.testing.assert_close(multi_lora_ref(x, a, b, lids, 0.5, base), lora_adapter_loop(x, a, b, lids, 0.5, base))
    times = time_interleaved(
        {
            "multi_lora_ref (delta onto a given base)": lambda: multi_lora_ref(x, a, b, lids, 0.5, base),
            "per-adapter masked loop": lambda: lora_adapter_loop(x, a, b, lids, 0.5, base),
            "base matmul x @ W.T alone": lambda: x @ W.T,
            "base matmul + multi_lora_ref": lambda: multi_lora_ref(x, a, b, lids, 0.5, x @ W.T),
        },
        rounds,
        target_s=0.05,
    )
    both, alone = times["base matmul + multi_lora_ref"], times["base matmul x @ W.T alone"]
    overhead = f"{both[0] / alone[0]:.2f}x (min) / {both[1] / alone[1]:.2f}x (median)"
    print_table(
        f"Mixed-adapter LoRA, fp32, {n} rows, {L} adapters, d={d}, r={r}",
        times,
        "per-adapter masked loop",
        note=f"goals: multi_lora_ref >= 3x the loop; (base + LoRA) / base <= 1.3x -> measured {overhead}",
    )


# --------------------------------------------------------------------------- GPU


def moe_bytes(T: int, ids: torch.Tensor, d: int, f: int, w_bytes: int, act_bytes: int, int8: bool) -> int:
    """HBM bytes a perfect fused MoE moves.

    ``U * 3*f*d * w_bytes`` for the touched experts' weights (``U`` distinct ids;
    ``w13`` is ``2f x d``, ``w2`` is ``d x f``) ``+ U * (2f + d) * 4`` for int8
    scales ``+ act_bytes * (T*d [x] + 2*P*f [h write+read] + 2*P*d [routed
    outputs write+read] + T*d [out])`` with ``P = T*k`` pairs.
    """
    U = int(torch.unique(ids).numel())
    P = ids.numel()
    weights = U * 3 * f * d * w_bytes + (U * (2 * f + d) * 4 if int8 else 0)
    return weights + act_bytes * (2 * T * d + 2 * P * f + 2 * P * d)


def _us(seconds: float) -> str:
    return "-" if seconds != seconds else f"{seconds * 1e6:.1f}us"


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


Timer = Callable[[Callable[[], object]], float]


def cuda_timers() -> tuple[Timer, Timer]:
    """``(eager, graphed)``: median seconds per call by ``triton.testing.do_bench`` (CUDA events, warm-up
    first), and the same replayed from a CUDA graph (NaN, with the reason printed, if capture fails)."""
    import triton.testing as tt

    def eager(fn) -> float:
        return tt.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e-3

    def graphed(fn) -> float:
        try:
            with torch.cuda.stream(torch.cuda.Stream()):
                return tt.do_bench_cudagraph(fn, rep=200, return_mode="median") * 1e-3
        except Exception as exc:  # report, do not hide, a capture failure
            print(f"  (CUDA graph capture failed: {type(exc).__name__}: {exc})")
            return float("nan")

    return eager, graphed


def moe_rows(
    peak_gbps: float | None,
    *,
    dev: torch.device,
    dt: torch.dtype,
    moe_sizes: tuple[int, int, int, int],
    tokens: tuple[int, ...],
    timer: Timer,
    graphed: Timer | None,
    int8: bool = True,
) -> list[dict[str, float | int | str]]:
    """The fused-MoE table's rows: Triton (eager, CUDA graph at T <= 64) against the per-expert
    loop and the reference, with achieved bandwidth and error, for each T and weight kind.

    Returns:
        One dict per (T, weights): ``T``, ``weights``, ``triton_s``, ``graph_s``, ``loop_s``,
        ``ref_s`` (NaN where not run), ``loop_over_triton`` (eager over eager), ``gbps`` and
        ``pct_peak`` (from the faster of eager and graph; NaN without a peak), ``tflops``, ``err``.
    """
    E, k, d, f = moe_sizes
    torch.manual_seed(0)
    w13 = (torch.randn(E, 2 * f, d, device=dev) / d**0.5).to(dt)
    w2 = (torch.randn(E, d, f, device=dev) / f**0.5).to(dt)
    q = {
        "w13": torch.randint(-127, 128, (E, 2 * f, d), device=dev, dtype=torch.int8),
        "w2": torch.randint(-127, 128, (E, d, f), device=dev, dtype=torch.int8),
        "w13_scale": torch.full((E, 2 * f), 1 / (127 * d**0.5), device=dev),
        "w2_scale": torch.full((E, d), 1 / (127 * f**0.5), device=dev),
    }
    nan = float("nan")
    rows = []
    for T in tokens:
        x = torch.randn(T, d, device=dev, dtype=dt)
        wts, ids = routing(T, E, k, dev, dt)
        for label in ("float", "int8") if int8 else ("float",):
            if label == "float":
                a13, a2, kw = w13, w2, {}
            else:
                a13, a2, kw = q["w13"], q["w2"], {"w13_scale": q["w13_scale"], "w2_scale": q["w2_scale"]}
            err = _rel_err(fused_moe(x, a13, a2, wts, ids, **kw), fused_moe_ref(x, a13, a2, wts, ids, **kw))
            fused = lambda: fused_moe(x, a13, a2, wts, ids, check_ids=False, **kw)  # noqa: E731
            t_tri = timer(fused)
            t_graph = graphed(fused) if graphed is not None and T <= 64 else nan
            t_loop = t_ref = nan
            if label == "float":  # the torch baselines run on float weights only
                t_loop = timer(lambda: moe_masked_loop(x, w13, w2, wts, ids))
                t_ref = timer(lambda: fused_moe_ref(x, w13, w2, wts, ids))
            best = min(t_tri, t_graph) if t_graph == t_graph else t_tri
            el = torch.finfo(dt).bits // 8
            gbps = moe_bytes(T, ids, d, f, el if label == "float" else 1, el, label == "int8") / best / 1e9
            rows.append(
                {
                    "T": T,
                    "weights": label,
                    "triton_s": t_tri,
                    "graph_s": t_graph,
                    "loop_s": t_loop,
                    "ref_s": t_ref,
                    "loop_over_triton": t_loop / t_tri,
                    "gbps": gbps,
                    "pct_peak": 100 * gbps / peak_gbps if peak_gbps else nan,
                    "tflops": 2 * ids.numel() * 3 * f * d / best / 1e12,
                    "err": err,
                }
            )
    return rows


def lora_times(
    *, dev: torch.device, dt: torch.dtype, lora_sizes: tuple[int, int, int, int], timer: Timer
) -> tuple[dict[str, float], float]:
    """Multi-LoRA (Triton) against the per-adapter loop and the reference: seconds per call by
    variant, and ``max |triton - ref| / max |ref|``. Rows draw adapters in ``[-1, L)``."""
    n, L, d, r = lora_sizes
    torch.manual_seed(0)
    x = torch.randn(n, d, device=dev, dtype=dt)
    base = torch.randn(n, d, device=dev, dtype=dt)
    a = (torch.randn(L, r, d, device=dev) / d**0.5).to(dt)
    b = (torch.randn(L, d, r, device=dev) / r**0.5).to(dt)
    lids = torch.randint(-1, L, (n,), device=dev)
    err = _rel_err(multi_lora(x, a, b, lids, 0.5, base), multi_lora_ref(x, a, b, lids, 0.5, base))
    times = {
        "multi_lora (Triton)": timer(lambda: multi_lora(x, a, b, lids, 0.5, base, check_ids=False)),
        "per-adapter masked loop": timer(lambda: lora_adapter_loop(x, a, b, lids, 0.5, base)),
        "multi_lora_ref": timer(lambda: multi_lora_ref(x, a, b, lids, 0.5, base)),
    }
    return times, err


def bench_gpu(
    peak_gbps: float,
    *,
    dev: torch.device = torch.device("cuda"),
    dt: torch.dtype = torch.bfloat16,
    moe_sizes: tuple[int, int, int, int] = (64, 8, 2048, 1024),  # E, k, d, f: OLMoE-1B-7B-like experts
    tokens: tuple[int, ...] = (1, 16, 64, 4096),
    lora_sizes: tuple[int, int, int, int] = (512, 32, 2048, 16),  # rows, adapters, d, r
) -> None:
    name = torch.cuda.get_device_name() if dev.type == "cuda" else str(dev)
    print(f"\nGPU: {name}, {dt}, peak HBM bandwidth assumed {peak_gbps:.0f} GB/s")
    timer, graphed = cuda_timers()
    E, k, d, f = moe_sizes
    print(f"\nFused MoE, {dt}, E={E} k={k} d={d} f={f}; Triton launched with check_ids=False (no host sync)")
    print(
        f"  {'T':>5} {'weights':>7} {'triton':>11} {'+cuda graph':>12} {'torch loop':>11} {'ref':>11} "
        f"{'loop/triton':>11} {'GB/s':>7} {'% peak':>7} {'TFLOP/s':>8} {'err':>8}"
    )
    for row in moe_rows(peak_gbps, dev=dev, dt=dt, moe_sizes=moe_sizes, tokens=tokens, timer=timer, graphed=graphed):
        ratio = f"{row['loop_over_triton']:.2f}x" if row["loop_s"] == row["loop_s"] else "-"
        print(
            f"  {row['T']:>5} {row['weights']:>7} {_us(row['triton_s']):>11} {_us(row['graph_s']):>12} "
            f"{_us(row['loop_s']):>11} {_us(row['ref_s']):>11} {ratio:>11} {row['gbps']:>7.0f} "
            f"{row['pct_peak']:>6.1f}% {row['tflops']:>8.1f} {row['err']:>8.1e}"
        )
    print("  GB/s and TFLOP/s use the faster of eager and CUDA graph; err = max |triton - ref| / max |ref|")
    print(
        "  bytes = U*3*f*d*w_bytes (+ U*(2f+d)*4 int8 scales) + a_bytes*(2*T*d + 2*P*f + 2*P*d), U = distinct experts"
    )

    n, L, d, r = lora_sizes
    times, err = lora_times(dev=dev, dt=dt, lora_sizes=lora_sizes, timer=timer)
    print_table(
        f"Mixed-adapter LoRA, {dt}, {n} rows, {L} adapters (+ rows without), d={d}, r={r}",
        {name: (t, t) for name, t in times.items()},  # do_bench gives the median only
        "per-adapter masked loop",
        note=f"max |triton - ref| / max |ref| = {err:.1e}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="also benchmark the Triton launchers on CUDA")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds per CPU table")
    parser.add_argument("--peak-gbps", type=float, default=4800.0, help="HBM peak for the roofline (H200: 4800)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU tables")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, load average {load:.1f}"
    )
    if not args.skip_cpu:
        with torch.no_grad():
            bench_cpu(args.rounds)
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device")
        with torch.no_grad():
            bench_gpu(args.peak_gbps)


if __name__ == "__main__":
    main()
