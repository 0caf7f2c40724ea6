"""Protocol 4: language feedback — the tiny MoE LM learns from a rule-based judge's thumbs.

The service's model (a frozen, seeded ``build_base_model`` base; only slot 0's LoRA adapter
learns) serves prompts of the rule task (:mod:`cl.evaluation._rule_task`: ``"a3>"`` wants
one digit, decided by the prompt's family) with :func:`cl.model.generation.generate` at
temperature 1, so the policy explores. A rule-based judge gives thumbs up or down on each
served output, and the event becomes a ``generate`` :class:`~cl.learning.example.Example` that the
service's :class:`~cl.learning.online_learner.OnlineLearner` learns from, in micro-batches. The rules
flip at known points: family ``a`` changes its answer while ``b`` goes quiet, then ``a``'s
old rule returns.

Methods (same base, seeds, prompt stream, micro-batch and learning rate; drift detection
off, so only the objective and replay differ):

* **SFT on thumbs-up**: only "up" events, each as a ``correction`` whose text is the served
  output (teacher-forced likelihood); "down" events are dropped. Replay off.
* **RWL**: every thumb, ``preference_loss="rwl"`` (likelihood / unlikelihood). Replay off.
* **KTO**: every thumb, ``preference_loss="kto"``. Replay off.
* **KTO + replay**: KTO with the service's reservoir buffer, one replayed example per new one.

Served outputs are limited to the ten digits by a logit mask in front of ``generate``
(:class:`AlphabetPolicy`): with every ASCII byte open, a random policy almost never finds the
answer. (This protocol found that bytes >= 0x80 decoded to U+FFFD, so a thumbs on them
trained other tokens than the served ones; ``generate`` now never samples them.) Training
is unmasked.

Metrics: the positive-feedback rate of the served (sampled) outputs, per phase and in a
sliding window; forgetting of the unchanged rule (family ``b``, greedy on its ten probe
prompts, before the flip vs at the end of the flip phase); time per event. Whether a
method gets stuck depends on the seed, so the full size averages three seeds (and lists
each).

Entry point: :func:`run`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cl.config import LearnerConfig, ModelSection
from cl.evaluation._rule_task import ALPHABET, Phase, default_phases, flip_points, judge, probe_prompts, sample_prompts
from cl.evaluation._running import TORCH_THREADS, Progress, torch_threads
from cl.evaluation.result import Figure, ProtocolResult, Table
from cl.learning.example import Example
from cl.learning.online_learner import OnlineLearner
from cl.model.base_model import build_base_model
from cl.model.generation import generate
from cl.model.tokenizer import ByteTokenizer

__all__ = ["METHODS", "AlphabetPolicy", "Method", "MethodRun", "phase_rates", "run", "sliding_rate"]

NAME = "language_feedback"
TITLE = "Language feedback (tiny MoE LM, rule-based judge)"
TEMPERATURE = 1.0
LEARNER = {
    "batch_size": 16,
    "lr": 5e-3,
    "kto_beta": 0.1,
    "replay": "reservoir",
    "replay_capacity": 2000,
    "drift_detector": "none",
    "holdout_fraction": 0.0,
}
# Events per phase, the sliding window of the curves, and how often family b is probed.
# Seeds run per size: whether KTO gets stuck depends on the seed, so the full size runs three.
SIZES: dict[bool, dict[str, int]] = {
    False: {"learn": 1600, "flip": 2000, "back": 1600, "window": 160, "probe_every": 160, "seeds": 3},
    True: {"learn": 480, "flip": 240, "back": 240, "window": 96, "probe_every": 96, "seeds": 1},
}
_TOK = ByteTokenizer()


@dataclass(frozen=True)
class Method:
    """One way to learn from the thumbs.

    Attributes:
        name: Display name.
        preference_loss: ``LearnerConfig.preference_loss`` for thumbs examples.
        replay: Mix in reservoir replay (one replayed example per new one).
        ups_only: Keep only thumbs-up events, as corrections equal to the served text.
    """

    name: str
    preference_loss: str = "kto"
    replay: bool = False
    ups_only: bool = False

    def learner_config(self) -> LearnerConfig:
        return LearnerConfig(**LEARNER, preference_loss=self.preference_loss, replay_ratio=1.0 if self.replay else 0.0)


METHODS: tuple[Method, ...] = (
    Method("SFT on thumbs-up", ups_only=True),
    Method("RWL", preference_loss="rwl"),
    Method("KTO", preference_loss="kto"),
    Method("KTO + replay", preference_loss="kto", replay=True),
)


class AlphabetPolicy:
    """The model as ``generate`` sees it, with every token outside ``alphabet`` masked out.

    It forwards everything else (``config``, ``device``, ``new_cache``, ``eval``, ...) to
    the model, so ``generate`` samples from the adapter's distribution renormalised over
    the alphabet's bytes.

    Example:
        >>> from cl.model.base_model import build_base_model
        >>> from cl.config import ModelSection
        >>> policy = AlphabetPolicy(build_base_model(ModelSection()), "01")
        >>> prompt = ByteTokenizer().batch(["a3>"], pad_side="left")
        >>> out = generate(policy, prompt, max_new_tokens=3, temperature=1.0, seed=0)
        >>> set(ByteTokenizer().decode(out[0, prompt.shape[1]:])) <= {"0", "1"}
        True
    """

    def __init__(self, model: torch.nn.Module, alphabet: str) -> None:
        if not alphabet or any(len(ch.encode("utf-8")) != 1 for ch in alphabet):
            raise ValueError(f"alphabet {alphabet!r} must be non-empty single-byte characters, e.g. '0123456789'")
        ids = list(alphabet.encode("utf-8"))
        self.model = model
        self._bias = torch.full((model.config.vocab_size,), float("-inf"), device=model.device)  # (V,)
        self._bias[ids] = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, **inputs: Any) -> torch.Tensor:
        return self.model(**inputs) + self._bias  # (B, T, V)


@dataclass
class MethodRun:
    """What one method did over the stream.

    Attributes:
        method: Its name.
        seed: The seed of the base, prompts, sampling and learner.
        thumbs: ``(N,)`` bool, the judge's verdict on each served output, in stream order.
        probes: ``(event, family b greedy positive rate)`` every ``probe_every`` events, at
            every phase end and at the start (event 0).
        serve_s: Seconds spent generating.
        learn_s: Seconds spent in ``OnlineLearner.learn``.
    """

    method: str
    seed: int
    thumbs: np.ndarray
    probes: list[tuple[int, float]] = field(default_factory=list)
    serve_s: float = 0.0
    learn_s: float = 0.0

    def probe_at(self, event: int) -> float:
        """Family ``b``'s greedy positive rate measured at ``event``."""
        return next(rate for at, rate in self.probes if at == event)


def sliding_rate(thumbs: Sequence[bool] | np.ndarray, window: int) -> np.ndarray:
    """Positive rate over the trailing ``window`` events at each event (fewer at the start).

    >>> sliding_rate([1, 0, 1, 1], 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    x = np.asarray(thumbs, dtype=float)
    sums = np.cumsum(x)
    lagged = np.concatenate([np.zeros(window), sums[:-window]]) if len(x) > window else np.zeros(len(x))
    counts = np.minimum(np.arange(1, len(x) + 1), window)
    return (sums - lagged[: len(x)]) / counts


def phase_rates(thumbs: Sequence[bool] | np.ndarray, phases: Sequence[Phase], window: int) -> list[dict[str, float]]:
    """Per phase: the positive rate over the phase, over its first and over its last ``window`` events.

    >>> rates = phase_rates([0, 0, 1, 1, 1, 0], default_phases(4, 1, 1), window=2)
    >>> rates[0], rates[2]["all"]
    ({'all': 0.5, 'first': 0.0, 'last': 1.0}, 0.0)
    """
    x, out, start = np.asarray(thumbs, dtype=float), [], 0
    for phase in phases:
        part = x[start : start + phase.events]
        out.append(
            {"all": float(part.mean()), "first": float(part[:window].mean()), "last": float(part[-window:].mean())}
        )
        start += phase.events
    return out


def _serve(policy: AlphabetPolicy, prompts: list[str], generator: torch.Generator | None) -> list[str]:
    """One output character per prompt: sampled with ``generator``, greedy without one."""
    tokens = _TOK.batch(prompts, pad_side="left")  # (B, T); every prompt has the same length
    slot0 = torch.zeros(len(prompts), dtype=torch.long)  # (B,) the learner's adapter
    temperature = TEMPERATURE if generator is not None else 0.0
    seq = generate(
        policy, tokens, max_new_tokens=1, adapter_ids=slot0, temperature=temperature, generator=generator
    )  # (B, T + 1)
    return [_TOK.decode(row[tokens.shape[1] :]) for row in seq]


def _examples(method: Method, prompts: list[str], outputs: list[str], thumbs: list[bool], first: int) -> list[Example]:
    """The learner's examples for one micro-batch of judged events (ids ``e<first>``, ...)."""
    out = []
    for i, (text, served, up) in enumerate(zip(prompts, outputs, thumbs)):
        ids = {
            "event_id": f"e{first + i}",
            "request_id": f"r{first + i}",
            "kind": "generate",
            "text": text,
            "served_text": served,
        }
        if method.ups_only:
            if up:
                out.append(Example(**ids, signal="correction", correction=served))
        else:
            out.append(Example(**ids, signal="thumbs", desirable=up))
    return out


def _probe(policy: AlphabetPolicy, phase: Phase, family: str = "b") -> float:
    """Greedy positive rate of ``family``'s probe prompts under ``phase``'s rules."""
    prompts = probe_prompts(family)
    return float(np.mean([judge(p, o, phase) for p, o in zip(prompts, _serve(policy, prompts, None))]))


def _train(
    method: Method, phases: Sequence[Phase], stream: list[list[str]], seed: int, probe_every: int, progress: Progress
) -> MethodRun:
    """Serve, judge and learn through every phase's prompts (``stream[i]`` for phase ``i``)."""
    model = build_base_model(ModelSection(seed=seed))
    learner = OnlineLearner(model, method.learner_config(), seed=seed)
    policy = AlphabetPolicy(model, ALPHABET)
    generator = torch.Generator().manual_seed(seed)
    batch, thumbs = learner.config.batch_size, []
    record = MethodRun(method.name, seed, np.zeros(0, dtype=bool), probes=[(0, _probe(policy, phases[0]))])
    total = sum(p.events for p in phases)
    for phase, prompts in zip(phases, stream):
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            t0 = time.perf_counter()
            outputs = _serve(policy, chunk, generator)
            t1 = time.perf_counter()
            verdicts = [judge(p, o, phase) for p, o in zip(chunk, outputs)]
            examples = _examples(method, chunk, outputs, verdicts, len(thumbs))
            if examples:
                learner.learn(examples)
            record.serve_s += t1 - t0
            record.learn_s += time.perf_counter() - t1
            thumbs += verdicts
            end_of_phase = start + batch >= len(prompts)
            if len(thumbs) % probe_every < len(chunk) or end_of_phase:
                record.probes.append((len(thumbs), _probe(policy, phase)))
            progress.tick(
                lambda: (
                    f"{method.name}, seed {seed}: {len(thumbs)}/{total} events ({phase.name}), "
                    f"positive rate {np.mean(thumbs[-200:]):.2f} over the last 200"
                )
            )
    record.thumbs = np.array(thumbs, dtype=bool)
    return record


def run(quick: bool = False, seed: int = 0, say: Callable[[str], None] = print) -> ProtocolResult:
    """Run every method through the rule task and report positive rates and forgetting.

    Args:
        quick: The test-suite size (one seed, a few hundred events per phase) instead of the
            full one (three seeds).
        seed: The first seed; seed ``s`` seeds the base model, the prompt stream, sampling and
            the learners of its runs, and the full size also runs ``seed + 1`` and ``seed + 2``.
        say: Where progress lines go (about every 5 s).

    Returns:
        The ``language_feedback`` :class:`ProtocolResult`.
    """
    size = SIZES[quick]
    phases = default_phases(size["learn"], size["flip"], size["back"])
    seeds = [seed + i for i in range(size["seeds"])]
    progress = Progress(say, NAME)
    load_before, started = os.getloadavg()[0], time.perf_counter()
    runs: dict[str, list[MethodRun]] = {m.name: [] for m in METHODS}
    with torch_threads(TORCH_THREADS):
        for s in seeds:
            rng = np.random.default_rng(s)
            stream = [sample_prompts(phase, phase.events, rng) for phase in phases]  # shared by every method
            for method in METHODS:
                r = _train(method, phases, stream, s, size["probe_every"], progress)
                runs[method.name].append(r)
                rates = phase_rates(r.thumbs, phases, size["window"])
                say(
                    f"[{NAME}] {method.name}, seed {s}: positive rate per phase "
                    + ", ".join(f"{p.name} {x['all']:.2f}" for p, x in zip(phases, rates))
                )
    window = size["window"]
    result = ProtocolResult(NAME, TITLE, quick=quick)
    result.tables += [
        _rate_table(runs, phases, window),
        _forgetting_table(runs, phases, window),
        _seed_table(runs, phases, window),
        _time_table(runs),
    ]
    result.figures += [_figure(runs, phases, window), _seed_figure(runs, phases, window)]
    result.settings = _settings(quick, seeds, size, phases)
    result.settings["run time (s)"] = round(time.perf_counter() - started, 1)
    result.settings["1-min load average before / after"] = f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
    result.summary = _summary(runs, phases, seeds, window)
    return result


def _mean_rates(runs: Sequence[MethodRun], phases: Sequence[Phase], window: int) -> list[dict[str, float]]:
    """:func:`phase_rates` averaged over the runs (seeds) of one method."""
    each = [phase_rates(r.thumbs, phases, window) for r in runs]
    return [{k: float(np.mean([e[i][k] for e in each])) for k in each[0][i]} for i in range(len(phases))]


def _b_probe(runs: Sequence[MethodRun], event: int) -> float:
    return float(np.mean([r.probe_at(event) for r in runs]))


def _rate_table(runs: dict[str, list[MethodRun]], phases: Sequence[Phase], window: int) -> Table:
    columns = ["method", *(f"{p.name}: positive rate" for p in phases)]
    columns += [f"learn: first {window}", f"learn: last {window}", f"flip: last {window}", f"return: first {window}"]
    rows = []
    for name, rs in runs.items():
        rates = _mean_rates(rs, phases, window)
        rows.append(
            [name, *(x["all"] for x in rates), rates[0]["first"], rates[0]["last"], rates[1]["last"], rates[2]["first"]]
        )
    n = len(next(iter(runs.values())))
    return Table(
        f"Positive-feedback rate of the served (sampled) outputs, per phase (mean over {n} seed(s))", columns, rows
    )


def _forgetting_table(runs: dict[str, list[MethodRun]], phases: Sequence[Phase], window: int) -> Table:
    flips, end = flip_points(phases), sum(p.events for p in phases)
    rows = []
    for name, rs in runs.items():
        before, after = _b_probe(rs, flips[0]), _b_probe(rs, flips[1])
        adapted = _mean_rates(rs, phases, window)[1]["last"]
        rows.append([name, before, after, before - after, _b_probe(rs, end), adapted])
    columns = [
        "method",
        "b before the flip",
        "b at the end of the flip",
        "forgetting (before - after)",
        "b at the end",
        f"a's new rule learned (flip: last {window})",
    ]
    return Table(
        "Forgetting of the unchanged rule: family b's greedy positive rate on its 10 probe prompts (mean over seeds)",
        columns,
        rows,
    )


def _seed_table(runs: dict[str, list[MethodRun]], phases: Sequence[Phase], window: int) -> Table:
    flips = flip_points(phases)
    rows = []
    for name, rs in runs.items():
        for r in rs:
            rates = phase_rates(r.thumbs, phases, window)
            rows.append([name, r.seed, *(x["all"] for x in rates), r.probe_at(flips[0]), r.probe_at(flips[1])])
    columns = [
        "method",
        "seed",
        *(f"{p.name}: positive rate" for p in phases),
        "b before the flip",
        "b at the end of the flip",
    ]
    return Table("Per seed", columns, rows)


def _time_table(runs: dict[str, list[MethodRun]]) -> Table:
    rows = []
    for name, rs in runs.items():
        n = sum(len(r.thumbs) for r in rs)
        serve, learn = sum(r.serve_s for r in rs), sum(r.learn_s for r in rs)
        rows.append([name, 1e3 * serve / n, 1e3 * learn / n, 1e3 * (serve + learn) / n])
    return Table(
        "Time per event (ms; generate for one micro-batch, then learn from it; a shared 2-core machine)",
        ["method", "serve", "learn", "total"],
        rows,
    )


def _flip_lines(ax: Any, phases: Sequence[Phase]) -> None:
    for x in flip_points(phases):
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)


def _figure(runs: dict[str, list[MethodRun]], phases: Sequence[Phase], window: int) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    for name, rs in runs.items():
        curve = np.mean([sliding_rate(r.thumbs, window) for r in rs], axis=0)  # (N,)
        top.plot(np.arange(1, len(curve) + 1), curve, label=name, linewidth=1.4)
        at = [e for e, _ in rs[0].probes]
        bottom.plot(at, [_b_probe(rs, e) for e in at], marker=".", label=name, linewidth=1.2)
    _flip_lines(top, phases)
    _flip_lines(bottom, phases)
    bounds = [0, *flip_points(phases), sum(p.events for p in phases)]
    for phase, lo, hi in zip(phases, bounds, bounds[1:]):
        rules = ", ".join(f"{f}->{a}" for f, a in phase.rules.items())
        top.text(
            (lo + hi) / 2,
            1.0,
            f"{phase.name}\n({rules}; traffic {'+'.join(phase.traffic)})",
            ha="center",
            va="top",
            fontsize=8,
        )
    top.set_ylabel(f"positive rate (last {window} events)")
    top.legend(loc="lower left", fontsize=8)
    bottom.set_ylabel("family b, greedy probe")
    bottom.set_xlabel("feedback event")
    n = len(next(iter(runs.values())))
    caption = (
        f"Top: positive-feedback rate of the served outputs (sliding window of {window} events, mean over "
        f"{n} seed(s)). Bottom: family b's greedy positive rate on its 10 probe prompts (mean over seeds). "
        "Dashed lines: the rule flips."
    )
    return Figure("positive_rate", caption, fig)


def _seed_figure(runs: dict[str, list[MethodRun]], phases: Sequence[Phase], window: int) -> Figure:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(9, 5.5), layout="constrained")
    axes = fig.subplots(2, (len(runs) + 1) // 2, sharex=True, sharey=True).flatten()
    for ax, (name, rs) in zip(axes, runs.items()):
        for r in rs:
            curve = sliding_rate(r.thumbs, window)
            ax.plot(np.arange(1, len(curve) + 1), curve, linewidth=1.1, label=f"seed {r.seed}")
        _flip_lines(ax, phases)
        ax.set_title(name, fontsize=10)
    axes[0].legend(loc="lower left", fontsize=8)
    for ax in axes[-2:]:
        ax.set_xlabel("feedback event")
    caption = (
        f"Positive-feedback rate of the served outputs per method and seed (sliding window of {window} "
        "events); dashed lines: the rule flips."
    )
    return Figure("positive_rate_per_seed", caption, fig)


def _settings(quick: bool, seeds: list[int], size: dict[str, int], phases: Sequence[Phase]) -> dict[str, Any]:
    return {
        "size": "quick" if quick else "full",
        "seeds (each: base model, prompts, sampling, learners)": seeds,
        "model": "ModelSection() defaults (preset tiny, LoRA rank 4) with the run's seed; adapter slot 0 learns",
        "phases (events, traffic, rules)": "; ".join(
            f"{p.name}: {p.events}, {'+'.join(p.traffic)}, {dict(p.rules)}" for p in phases
        ),
        "prompts": "'<family><digit>>', family then digit uniform over the phase's traffic",
        "serving": f"generate, 1 new token, temperature {TEMPERATURE}, outputs masked to {ALPHABET!r}",
        "learner (shared)": dict(LEARNER),
        "methods": {
            m.name: {
                "preference_loss": m.preference_loss,
                "replay_ratio": 1.0 if m.replay else 0.0,
                "ups_only": m.ups_only,
            }
            for m in METHODS
        },
        "sliding window (events)": size["window"],
        "family b probed every (events)": size["probe_every"],
        "torch threads": TORCH_THREADS,
    }


def _summary(runs: dict[str, list[MethodRun]], phases: Sequence[Phase], seeds: list[int], window: int) -> str:
    flips = flip_points(phases)
    per_method = "; ".join(
        f"{name}: " + ", ".join(f"{p.name} {x['all']:.2f}" for p, x in zip(phases, _mean_rates(rs, phases, window)))
        for name, rs in runs.items()
    )
    forgetting = "; ".join(
        f"{name} {_b_probe(rs, flips[0]):.2f} -> {_b_probe(rs, flips[1]):.2f}" for name, rs in runs.items()
    )
    counts = "; ".join(
        f"{name} {sum(phase_rates(r.thumbs, phases, window)[1]['last'] >= 0.5 for r in rs)} and "
        f"{sum(r.probe_at(flips[1]) >= r.probe_at(flips[0]) for r in rs)} of {len(rs)}"
        for name, rs in runs.items()
    )
    return (
        "The service's tiny MoE LM (random frozen base, LoRA slot 0) serves one-digit answers to prompts of two "
        "families; a rule-based judge gives thumbs and the OnlineLearner learns from them in micro-batches of "
        f"{LEARNER['batch_size']}. Family a's rule flips at event {flips[0]} (family b is then silent) and its old "
        f"rule returns at event {flips[1]}. Mean positive rate of the served outputs per phase over seeds {seeds}: "
        f"{per_method}. Family b's greedy probe rate before the flip -> at the end of the flip phase (forgetting "
        f"of the unchanged rule): {forgetting}; read it next to how much of a's new rule each method learned. "
        f"Seeds where a method learned a's new rule (positive rate >= 0.5 over the flip's last {window} events) "
        f"and kept b's: {counts}. "
        "SFT on thumbs-up moves only on a thumbs-up, so once it is sure of the old answer it gets none and stays; "
        "RWL's unlikelihood can leave a sure answer, and what it moves for a moves b with it when b is not replayed. "
        "KTO's loss is bounded: thumbs-down can push every digit of a family far below the reference (the mass "
        "goes to bytes the digit mask never serves) until the loss saturates, after which a rare thumbs-up on the "
        "right digit hardly moves it (seen in the full-size run on seed 0: family a's digits ended some 65 nats "
        "below the reference by the end of phase 1). Nothing was tuned per method: lr, kto_beta and the replay "
        "settings are the service's defaults (drift detection off); the task (digit alphabet, family-level rules, "
        "phase lengths) was chosen so that a random base with a rank-4 adapter can learn it from thumbs at all; "
        "the seeds were not picked."
    )
