"""The device check: one command that shows the GPU path works, and how fast the kernels are (#15).

Usage (from the repository root, on a machine with one H100 or H200; about 3-5 minutes)::

    python -m bench.gpu_check [--out PATH] [--peak-gbps N] [--budget-s S]
    python -m bench.gpu_check --dry-run     # the same logic on the CPU: Triton interpreter, tiny sizes

Four parts, printed as they run and written to one markdown report (``--out``; default
``$OUT/gpu_check.md`` when ``OUT`` is set, else ``./gpu_check.md``):

1. **CUDA tests**: ``pytest -m "not integration"`` over the test files that skip without a GPU
   (found by their ``torch.cuda.is_available()`` guards; the dry run only collects them).
2. **Kernels against their references** in bfloat16 (the dry run: float16, all the interpreter
   runs): fused MoE (plain, int8, LoRA) and multi-LoRA at a few odd shapes, max abs and relative error.
3. **A replica and a learner on CUDA**, the checks of :mod:`cl.testing.device_checks` (the CUDA test
   asserts the same), and the host syncs of one served batch, counted with CUDA's sync debug mode:
   none may come from ``kernels/``.
4. **Benchmark tables** from :mod:`bench.bench_kernels`: fused MoE against the per-expert loop at
   E=64, k=8 for T=1, 16, 64, 4096, bandwidth against the HBM roofline, multi-LoRA with 32 adapters
   against the per-adapter loop, and the goals (met / not met).

Exit status: 0 when every check passed (performance goals are reported, not enforced), 1 when one
failed, 2 without a CUDA device (unless ``--dry-run``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_START = time.monotonic()

# HBM peaks by device name (most specific first); anything else needs --peak-gbps.
PEAK_GBPS = (("GH200", None), ("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100 NVL", 3900.0), ("H100", 3350.0))
GOALS = {"moe_speedup": 5.0, "hbm_fraction": 0.60, "lora_speedup": 4.0}


@dataclass(frozen=True)
class Sizes:
    """The shapes of one run: real ones on a GPU, tiny ones for the dry run."""

    moe_checks: tuple[tuple[int, int, int, int, int], ...]  # T, E, k, d, f
    lora_checks: tuple[tuple[int, int, int, int, int], ...]  # T, L, K, N, r
    moe_bench: tuple[int, int, int, int]  # E, k, d, f
    tokens: tuple[int, ...]
    lora_bench: tuple[int, int, int, int]  # rows, adapters, d, r


GPU_SIZES = Sizes(
    moe_checks=((1, 64, 8, 2048, 1024), (37, 8, 2, 96, 160), (300, 16, 4, 256, 512)),
    lora_checks=((1, 4, 64, 64, 8), (129, 32, 2048, 2048, 16), (77, 5, 96, 200, 4)),
    moe_bench=(64, 8, 2048, 1024),  # OLMoE-1B-7B-like experts
    tokens=(1, 16, 64, 4096),
    lora_bench=(512, 32, 2048, 16),
)
DRY_SIZES = Sizes(
    moe_checks=((5, 4, 2, 32, 48), (17, 8, 3, 40, 24)),
    lora_checks=((9, 3, 32, 24, 4),),
    moe_bench=(8, 2, 32, 64),
    tokens=(1, 16),
    lora_bench=(32, 4, 32, 4),
)


@dataclass
class Report:
    """What the run found: pass/fail lines and markdown sections, in order."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))
        say(f"{'PASS' if passed else 'FAIL'} {name}: {detail}")

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def say(line: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f}s] {line}", flush=True)


def peak_gbps(device_name: str) -> float | None:
    """The HBM peak (GB/s) of a device by its name; None when unknown (or ambiguous, as GH200)."""
    for key, value in PEAK_GBPS:
        if key.lower() in device_name.lower():
            return value
    return None


def default_out(env: dict[str, str] | os._Environ) -> Path:
    """``$OUT/gpu_check.md`` when ``OUT`` is set, else ``./gpu_check.md``."""
    return Path(env["OUT"]) / "gpu_check.md" if env.get("OUT") else Path("gpu_check.md")


def cuda_test_paths(root: Path = REPO) -> list[str]:
    """Test files (or, for a conftest, their folder) that skip without a GPU, repository-relative."""
    found: set[Path] = set()
    for path in sorted((root / "tests").rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[1] in ("integration", "faults") or "cuda.is_available" not in path.read_text():
            continue
        found.add(rel.parent if path.name == "conftest.py" else rel)
    return sorted(str(p) for p in found if not any(parent in found for parent in p.parents))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# ------------------------------------------------------------------------------------ parts


def run_tests(report: Report, dry_run: bool, timeout_s: float) -> None:
    paths = cuda_test_paths()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not integration", "-p", "no:cacheprovider", *paths]
    if dry_run:
        cmd.append("--collect-only")
    say(f"tests: {shlex.join(cmd[1:])}")
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(10.0, timeout_s))
        tail, rc = (done.stdout + done.stderr).strip().splitlines()[-15:], done.returncode
    except subprocess.TimeoutExpired:
        tail, rc = [f"timed out after {timeout_s:.0f}s"], -1
    summary = next(
        (line for line in reversed(tail) if re.search(r"\d+ (passed|failed|error|tests? collected)", line)), ""
    )
    report.check("CUDA tests" + (" (collected only)" if dry_run else ""), rc == 0, summary or f"pytest exit {rc}")
    report.sections.append(
        "## CUDA tests\n\n`" + shlex.join(["pytest", *cmd[3:]]) + "`\n\n```\n" + "\n".join(tail) + "\n```"
    )


def check_kernels(report: Report, sizes: Sizes, dev, dt) -> None:  # noqa: ANN001 - torch types, imported late
    import torch

    from kernels import ExpertLoRA, fused_moe, fused_moe_ref, multi_lora, multi_lora_ref

    tol = 2e-2 if dt == torch.bfloat16 else 5e-3
    rows, worst = [], 0.0

    def compare(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
        nonlocal worst
        diff = (got.float() - want.float()).abs().max().item()
        rel = diff / max(want.float().abs().max().item(), 1e-30)
        worst = max(worst, rel)
        rows.append([name, f"{diff:.2e}", f"{rel:.2e}", "pass" if rel <= tol else "FAIL"])

    g = torch.Generator(device=dev).manual_seed(0)  # inputs drawn on the device: GBs of experts in no time

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:  # in dt; the reference upcasts these
        return (torch.randn(*shape, generator=g, device=dev) * scale).to(dt)

    def randint(low: int, high: int, *shape: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=g, device=dev, dtype=dtype)

    for T, E, k, d, f in sizes.moe_checks:
        x, w13, w2 = randn(T, d), randn(E, 2 * f, d, scale=d**-0.5), randn(E, d, f, scale=f**-0.5)
        wts, ids = torch.rand(T, E, generator=g, device=dev).softmax(-1).topk(k)
        wts = (wts / wts.sum(-1, keepdim=True)).to(dt)
        up = lambda t: t.float() if t.is_floating_point() else t  # noqa: E731
        want = fused_moe_ref(up(x), up(w13), up(w2), up(wts), ids)
        compare(f"fused_moe T={T} E={E} k={k} d={d} f={f}", fused_moe(x, w13, w2, wts, ids), want)
        q13 = randint(-127, 128, E, 2 * f, d, dtype=torch.int8)
        q2 = randint(-127, 128, E, d, f, dtype=torch.int8)
        s13, s2 = (
            torch.full((E, 2 * f), 1 / (127 * d**0.5), device=dev),
            torch.full((E, d), 1 / (127 * f**0.5), device=dev),
        )
        want = fused_moe_ref(up(x), q13, q2, up(wts), ids, w13_scale=s13, w2_scale=s2)
        compare("  int8 experts", fused_moe(x, q13, q2, wts, ids, w13_scale=s13, w2_scale=s2), want)
        L, r = 3, 4
        lids = randint(-1, L, T)
        lw = [randn(L, E, r, d, scale=0.3), randn(L, E, 2 * f, r, scale=0.3), randn(L, E, r, f, scale=0.3)]
        lw.append(randn(L, E, d, r, scale=0.3))
        lora = ExpertLoRA(lids, *lw, 0.5)
        want = fused_moe_ref(up(x), up(w13), up(w2), up(wts), ids, lora=ExpertLoRA(lids, *map(up, lw), 0.5))
        compare(f"  + expert LoRA (L={L}, r={r})", fused_moe(x, w13, w2, wts, ids, lora=lora), want)
    for T, L, K, N, r in sizes.lora_checks:
        x, base = randn(T, K), randn(T, N)
        a, b = randn(L, r, K, scale=K**-0.5), randn(L, N, r, scale=r**-0.5)
        lids = randint(-1, L, T)
        want = multi_lora_ref(x.float(), a.float(), b.float(), lids, 0.5, base.float())
        compare(f"multi_lora T={T} L={L} K={K} N={N} r={r}", multi_lora(x, a, b, lids, 0.5, base), want)
    name = str(dt).removeprefix("torch.")
    report.check(
        f"kernels vs references ({name})", worst <= tol, f"worst relative error {worst:.1e} (tolerance {tol:.0e})"
    )
    report.sections.append(
        f"## Kernels against their references, {name}\n\nLaunchers in {name}; references in float32 on the same "
        "inputs. rel = max |kernel - ref| / max |ref|.\n\n" + table(["case", "max abs", "rel", ""], rows)
    )


def check_replica(report: Report, dev, dt, dry_run: bool) -> None:  # noqa: ANN001
    import torch

    from cl.testing.device_checks import check_learning, check_serving

    lines = []
    results = [("", check_serving(dev, dt))]
    if dry_run:  # the launchers too, under the interpreter (float16: all it runs)
        with _env(CL_KERNELS="triton", CL_KERNELS_CHECK_IDS="0"):
            results.append((" (Triton interpreter)", check_serving(dev, torch.float16)))
    results.append(("", check_learning(dev)))
    for suffix, result in results:
        name = result.name + suffix
        report.check(name, result.passed, result.detail)
        lines.append(f"- **{name}**: {'pass' if result.passed else 'FAIL'}: {result.detail}")
    if dev.type == "cuda":
        lines.append("")
        lines.append(count_serving_syncs(report, dev, dt))
    else:
        lines.append("- host syncs per batch: not counted (needs CUDA's sync debug mode)")
    report.sections.append("## A replica serving and a learner learning\n\n" + "\n".join(lines))


def count_serving_syncs(report: Report, dev, dt) -> str:  # noqa: ANN001
    """Syncs of one predict batch and one generate batch as a replica runs them (kernel id checks off)."""
    import torch

    from cl.model.base_model import build_base_model
    from cl.serving.inference import GenerateItem, PredictItem, generate_batch, predict_batch
    from cl.serving.placement import place_for_serving
    from cl.testing.device_checks import SECTION

    model = place_for_serving(build_base_model(SECTION, n_adapter_slots=2), dev, dt)
    items = [PredictItem(features=(0.1 * i,) * SECTION.n_features, slot=i % 3 - 1) for i in range(8)]
    prompts = [GenerateItem(prompt="hello", slot=s, max_new_tokens=8) for s in (-1, 0, 1)]
    counts = {}
    with _env(CL_KERNELS_CHECK_IDS="0"):
        for name, fn in (
            ("predict batch", lambda: predict_batch(model, items)),
            ("generate 8 tokens", lambda: generate_batch(model, prompts)),
        ):
            fn()  # compile first
            torch.cuda.synchronize()
            counts[name] = _syncs(fn)
    in_kernels = sum(n for c in counts.values() for where, n in c.items() if where.startswith("kernels/"))
    report.check("no host sync in the kernels while serving", in_kernels == 0, f"{in_kernels} sync(s) from kernels/")
    rows = [
        [name, str(sum(c.values())), ", ".join(f"`{w}` x{n}" for w, n in c.most_common(8)) or "-"]
        for name, c in counts.items()
    ]
    return "Host syncs (CUDA sync debug mode), by the line of ours that caused them:\n\n" + table(
        ["call", "syncs", "where"], rows
    )


def _syncs(fn: Callable[[], object], set_mode: Callable[[str], None] | None = None) -> Counter:
    """``file:line`` of ours (the innermost frame under the repository) -> syncs ``fn`` caused.

    ``set_mode`` switches CUDA's sync debug mode (default ``torch.cuda.set_sync_debug_mode``).
    """
    import torch

    set_mode = set_mode or torch.cuda.set_sync_debug_mode
    where: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if "synchroniz" not in str(message):
            return
        ours = [f for f in traceback.extract_stack() if _is_ours(f.filename)]
        ours = [f for f in ours if Path(f.filename).resolve() != Path(__file__).resolve()] or ours
        frame = ours[-1] if ours else None
        where[f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno}" if frame else f"{filename}:{lineno}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record  # called as the warning is raised: the stack is the culprit's
        set_mode("warn")
        try:
            fn()
        finally:
            set_mode("default")
    return where


def _is_ours(filename: str) -> bool:
    """A file of this repository's code (not of its ``.venv`` or ``.cache``)."""
    path = Path(filename)
    return path.is_relative_to(REPO) and not path.relative_to(REPO).parts[0].startswith(".")


MOE_COLUMNS = ["T", "weights", "triton us", "graph us", "loop us", "ref us", "loop/triton", "GB/s", "% peak", "TFLOP/s"]


def _moe_cells(r: dict) -> list[str]:
    def us(s: float) -> str:
        return "-" if s != s else f"{s * 1e6:.1f}"

    ratio = "-" if r["loop_s"] != r["loop_s"] else f"{r['loop_over_triton']:.1f}x"
    pct = "-" if r["pct_peak"] != r["pct_peak"] else f"{r['pct_peak']:.0f}%"
    times = [us(r[k]) for k in ("triton_s", "graph_s", "loop_s", "ref_s")]
    return [str(r["T"]), str(r["weights"]), *times, ratio, f"{r['gbps']:.0f}", pct, f"{r['tflops']:.1f}"]


def goals(rows: list[dict], lora_speedup: float, adapters: int, peak: float | None) -> list[tuple[str, bool, str]]:
    """Each goal of #15, whether it is met, and the figures behind it (decode = float weights, T <= 64)."""
    decode = [r for r in rows if r["weights"] == "float" and int(r["T"]) <= 64]
    moe, hbm, lora = GOALS["moe_speedup"], GOALS["hbm_fraction"], GOALS["lora_speedup"]
    bandwidth = ", ".join(f"T={r['T']}: {r['pct_peak']:.0f}%" for r in decode) if peak else "no peak: pass --peak-gbps"
    return [
        (
            f"fused MoE >= {moe:.0f}x the per-expert loop at T <= 64",
            bool(decode) and all(r["loop_over_triton"] >= moe for r in decode),
            ", ".join(f"T={r['T']}: {r['loop_over_triton']:.1f}x" for r in decode),
        ),
        (
            f">= {hbm:.0%} of HBM bandwidth at decode sizes (T <= 64)",
            bool(peak and decode) and all(r["pct_peak"] >= 100 * hbm for r in decode),
            bandwidth,
        ),
        (
            f"multi-LoRA >= {lora:.0f}x the per-adapter loop ({adapters} adapters)",
            lora_speedup >= lora,
            f"{lora_speedup:.1f}x",
        ),
    ]


def run_benchmarks(report: Report, sizes: Sizes, dev, dt, peak: float | None) -> None:  # noqa: ANN001
    from bench.bench_kernels import cuda_timers, lora_times, moe_rows

    timer, graphed = cuda_timers() if dev.type == "cuda" else (_cpu_timer, None)
    E, k, d, f = sizes.moe_bench
    say(f"benchmarks: fused MoE E={E} k={k} d={d} f={f}, T={sizes.tokens}")
    rows = moe_rows(peak, dev=dev, dt=dt, moe_sizes=sizes.moe_bench, tokens=sizes.tokens, timer=timer, graphed=graphed)
    n, L, dl, rl = sizes.lora_bench
    say(f"benchmarks: multi-LoRA {n} rows, {L} adapters, d={dl}, r={rl}")
    times, lora_err = lora_times(dev=dev, dt=dt, lora_sizes=sizes.lora_bench, timer=timer)
    loop = times["per-adapter masked loop"]
    results = goals(rows, loop / times["multi_lora (Triton)"], L, peak)
    for goal, met, detail in results:
        say(f"goal {'met' if met else 'NOT met'}: {goal}: {detail}")

    name = str(dt).removeprefix("torch.")
    dry = "" if dev.type == "cuda" else "Dry run: the Triton interpreter's times, which mean nothing.\n\n"
    errors = ", ".join(f"T={r['T']} {r['weights']}: {r['err']:.1e}" for r in rows)
    report.sections += [
        f"## Fused MoE, {name}, E={E} k={k} d={d} f={f}\n\n{dry}Median microseconds per call "
        "(`triton.testing.do_bench` on CUDA, CUDA graph replay at T <= 64); loop = the per-expert masked loop, "
        "ref = `fused_moe_ref`. GB/s = the bytes a perfect kernel moves (`bench_kernels.moe_bytes`) over the "
        f"faster of eager and graph; HBM peak {f'{peak:.0f} GB/s' if peak else 'unknown'}.\n\n"
        + table(MOE_COLUMNS, [_moe_cells(r) for r in rows])
        + f"\n\nmax |triton - ref| / max |ref|: {errors}",
        f"## Multi-LoRA, {name}, {n} rows, {L} adapters (+ rows without), d={dl}, r={rl}\n\n{dry}"
        + table(
            ["variant", "us", "loop / variant"], [[v, f"{t * 1e6:.1f}", f"{loop / t:.1f}x"] for v, t in times.items()]
        )
        + f"\n\nmax |triton - ref| / max |ref| = {lora_err:.1e}",
        "## Goals\n\n"
        + table(["goal", "", "measured"], [[g, "met" if m else "**not met**", d] for g, m, d in results]),
    ]


def _cpu_timer(fn: Callable[[], object], reps: int = 5) -> float:
    fn()  # warm up (and compile)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


class _env:  # noqa: N801 - a context manager, used like a function
    """Set environment variables for a block, then restore them."""

    def __init__(self, **values: str) -> None:
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="markdown report (default: $OUT/gpu_check.md, else ./gpu_check.md)")
    parser.add_argument("--dry-run", action="store_true", help="run everything on the CPU at tiny sizes (interpreter)")
    parser.add_argument("--peak-gbps", type=float, help="HBM peak for the roofline (default: from the device name)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the benchmarks past this (default 420)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the pytest run")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before any launch; kernels jit at first launch
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "no CUDA device: torch.cuda.is_available() is False (torch "
            f"{torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "run it on a GPU machine, or add --dry-run to exercise it on the CPU",
            file=sys.stderr,
        )
        return 2
    import triton

    out = args.out or default_out(os.environ)
    dev = torch.device("cpu" if args.dry_run else "cuda")
    dt = torch.float16 if args.dry_run else torch.bfloat16  # the interpreter runs float32/float16 only
    sizes = DRY_SIZES if args.dry_run else GPU_SIZES
    device_name = (platform.processor() or platform.machine()) if args.dry_run else torch.cuda.get_device_name()
    peak = args.peak_gbps or (None if args.dry_run else peak_gbps(device_name))
    say(f"gpu_check on {device_name} ({'dry run, CPU' if args.dry_run else 'CUDA'}), report to {out}")
    report = Report()
    if not args.skip_tests:
        run_tests(report, args.dry_run, timeout_s=args.budget_s - 150)
    say("kernels against their references")
    check_kernels(report, sizes, dev, dt)
    say("a replica serving and a learner learning")
    serve_dt = torch.float32 if args.dry_run else dt  # dry run: the reference path at float32, then Triton at fp16
    check_replica(report, dev, serve_dt, args.dry_run)
    if time.monotonic() - _START < args.budget_s:
        run_benchmarks(report, sizes, dev, dt, peak)
    else:
        say(f"benchmarks skipped: past the {args.budget_s:.0f}s budget")
        report.sections.append("## Benchmarks\n\nSkipped: the checks used the time budget (`--budget-s`).")

    versions = f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}"
    summary = table(["check", "", "detail"], [[n, "pass" if ok else "**FAIL**", d] for n, ok, d in report.checks])
    header = (
        f"# gpu_check: {device_name}\n\n{time.strftime('%Y-%m-%d %H:%M %Z')}; {versions}; "
        f"{'dry run (CPU, Triton interpreter, tiny sizes)' if args.dry_run else 'CUDA'}; "
        f"{time.monotonic() - _START:.0f} s. `python -m bench.gpu_check{' --dry-run' if args.dry_run else ''}`.\n\n"
        f"**{'all checks passed' if report.passed else 'some checks FAILED'}**\n\n{summary}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join([header, *report.sections]) + "\n")
    say(f"{'all checks passed' if report.passed else 'some checks FAILED'}; report written to {out}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
