"""Offline retrain: replay the feedback history into a new adapter and register it as a challenger.

Run it with ``ray job submit`` (the README gives the command) or ``cl retrain``::

    python -m learners.retrain [--since 2026-11-01T00:00] [--until ...] [--continue-from 7|champion]
                               [--epochs 3] [--batch-size 64] [--no-announce] [--train-base [DATASET]]

1. **replay**: ``cl.requests`` (the whole log up to ``--until``) and ``cl.feedback`` (from
   ``--since`` to ``--until``, by Kafka timestamps) are read once, without a consumer group,
   so the online learner's positions are untouched; each rating is joined to its request by
   ``request_id`` and parsed with the service's own schemas (duplicates by ``event_id`` are
   dropped, bad and unjoined events counted);
2. **train**: with ``--train-base``, first the base model's own weights (on the replayed labels
   or a JSON-lines dataset; saved as safetensors for ``model.base_weights``); then a fresh
   adapter, or one continued from a named version, learns for
   ``--epochs`` shuffled passes through the same :class:`~cl.learning.online_learner.OnlineLearner`
   as online learning (replay and drift handling off: an epoch revisits everything anyway), on a
   GPU when ``learner.use_gpu`` says so (``"auto"``: when this process sees one);
3. **evaluate**: accuracy on the held-out feedback (``cl.learning.eval_set``, never trained on) of
   the base, the starting adapter and the result, after every epoch;
4. **register**: an MLflow version tagged ``source=retrain`` (curves and metrics on its run),
   announced on ``cl.events`` as ``version_published`` with ``role=challenger``: with
   rollouts on, the rollout controller canaries it like any new version.

The online learner never resumes from a retrain's version (it follows its own ``source=online``
line), so both can run side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from cl.config import Config
from cl.events import EventError, FeedbackEvent, RequestEvent, parse_event
from cl.learning.eval_set import is_held_out, score_adapter
from cl.learning.example import Example, check_example
from cl.learning.online_learner import OnlineLearner
from cl.lifecycle import VersionPublished
from cl.model.base_model import base_model_config, build_base_model
from cl.registry import AdapterRegistry, VersionTags
from cl.serving.placement import place_for_training, resolve_device
from streams.history import read_history

__all__ = ["RetrainError", "RetrainOptions", "RetrainResult", "collect_examples", "main", "retrain"]

Say = Callable[[str], None]


class RetrainError(RuntimeError):
    """The retrain cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class RetrainOptions:
    """What to replay and how to train. Times are unix seconds (None: no bound)."""

    since: float | None = None
    until: float | None = None
    continue_from: str | None = None  # a version number, an alias ("champion") or None for a fresh adapter
    epochs: int = 3
    batch_size: int = 64
    lr: float | None = None  # default: the learner's configured lr
    seed: int = 0
    announce: bool = True
    train_base: str | None = None  # "feedback" (the replayed labels) or a JSON-lines dataset file: train the base first


@dataclass
class ReplayCounts:
    """What the replay read and what became of it."""

    requests: int = 0
    feedback: int = 0
    joined: int = 0
    duplicates: int = 0
    unjoined: int = 0
    bad: int = 0
    held_out: int = 0


@dataclass
class RetrainResult:
    version: str | None
    run_id: str
    counts: ReplayCounts
    base_accuracy: float  # the base model (no adapter) on the held-out feedback
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per epoch, 0 = the starting adapter
    base_weights: str | None = None  # the trained base's file, with --train-base


def collect_examples(
    config: Config, since: float | None, until: float | None, say: Say
) -> tuple[list[Example], ReplayCounts]:
    """Join the feedback in ``[since, until]`` with its requests; the examples in feedback order."""
    counts = ReplayCounts()
    bootstrap, topics = config.kafka.bootstrap_servers, config.topics
    requests: dict[str, RequestEvent] = {}

    def progress(what: str) -> Callable[[int, int], None]:
        return lambda done, total: say(f"retrain: read {done:,}/{total:,} {what}")

    for record in read_history(bootstrap, topics.requests, until=until, progress=progress("requests")):
        try:
            request = parse_event(RequestEvent, record.value)
        except EventError:
            continue  # the online learner dead-letters these; a retrain only needs the good ones
        requests[request.request_id] = request
        counts.requests += 1
    examples: list[Example] = []
    seen: set[str] = set()
    for record in read_history(bootstrap, topics.feedback, since=since, until=until, progress=progress("ratings")):
        counts.feedback += 1
        try:
            feedback = parse_event(FeedbackEvent, record.value)
        except EventError:
            counts.bad += 1
            continue
        if feedback.event_id in seen:
            counts.duplicates += 1
            continue
        seen.add(feedback.event_id)
        request = requests.get(feedback.request_id)
        if request is None:
            counts.unjoined += 1
            continue
        try:
            examples.append(Example.from_join(request, feedback))
        except ValueError:
            counts.bad += 1
            continue
        counts.joined += 1
    return examples, counts


def _resolve(registry: AdapterRegistry, name: str) -> str:
    if name.isdigit():
        registry.get_version(name)  # KeyError when it does not exist
        return name
    version = registry.alias_version(name)
    if version is None:
        raise RetrainError(
            f"--continue-from {name!r}: no version has that alias; give a version number (cl versions lists them)"
        )
    return version


def retrain(config: Config, options: RetrainOptions, say: Say = print) -> RetrainResult:
    """Replay, train, evaluate and register (see the module docstring)."""
    if options.epochs < 1 or options.batch_size < 1:
        raise RetrainError(f"epochs={options.epochs}, batch_size={options.batch_size}: both must be 1 or more")
    torch.manual_seed(options.seed)
    registry = AdapterRegistry(config.mlflow.tracking_uri, config.mlflow.model_name)
    model = build_base_model(config.model)
    parent = None
    if options.continue_from:
        try:
            parent = _resolve(registry, options.continue_from)
        except KeyError:
            raise RetrainError(
                f"--continue-from {options.continue_from}: no such version of "
                f"{config.mlflow.model_name}; `cl versions` lists them"
            ) from None
        base = registry.get_version(parent).version_tags.base_version
        if base is not None and base != config.model.base_version:
            raise RetrainError(f"version {parent} was trained on base {base!r}, not {config.model.base_version!r}")
        model.load_adapter_state(0, registry.load_adapter(parent))

    examples, counts = collect_examples(config, options.since, options.until, say)
    held = [
        ex for ex in examples if ex.target is not None and is_held_out(ex.event_id, config.learner.holdout_fraction)
    ]
    train = [ex for ex in examples if ex.trainable and not is_held_out(ex.event_id, config.learner.holdout_fraction)]
    counts.held_out = len(held)
    say(
        f"retrain: {counts.joined:,} ratings joined ({counts.duplicates} duplicates, {counts.unjoined} without "
        f"their request, {counts.bad} bad); {len(train):,} to train on, {len(held):,} held out"
    )
    if not train:
        raise RetrainError(
            "no feedback to train on in the chosen time range; widen --since/--until, "
            f"or check that ratings reach {config.topics.feedback}"
        )

    if options.train_base:
        config = _train_base(config, model, train, options, held, score_adapter(model, -1, held), say)

    # The base trained (if asked) in float32 on the CPU; the adapter learns where learner.use_gpu says.
    device = resolve_device(config.learner.use_gpu, torch.cuda.device_count())
    place_for_training(model, device)
    if device.type == "cuda":
        say(f"retrain: learning on {torch.cuda.get_device_name(device)} (bfloat16 autocast, float32 adapter)")
    learner_config = dataclasses.replace(
        config.learner,
        replay_ratio=0.0,
        drift_detector="none",
        holdout_fraction=0.0,
        batch_size=options.batch_size,
        lr=options.lr or config.learner.lr,
    )
    learner = OnlineLearner(model, learner_config, seed=options.seed)
    run_id = registry.start_run(
        f"retrain-{int(time.time())}",
        params={
            "since": options.since,
            "until": options.until,
            "continue_from": parent or "",
            "epochs": options.epochs,
            "batch_size": options.batch_size,
            "lr": learner_config.lr,
            "examples": len(train),
            "held_out": len(held),
            **dataclasses.asdict(counts),
        },
    )
    base_score = score_adapter(model, -1, held)  # the trained base, when there is one
    curve = [
        {
            "epoch": 0.0,
            "loss": float("nan"),
            "train_accuracy": float("nan"),
            "eval_accuracy": score_adapter(model, 0, held),
        }
    ]
    say(f"retrain: held-out accuracy: base {base_score:.3f}, start {curve[0]['eval_accuracy']:.3f}")
    registry.log_metrics(run_id, {"eval_accuracy": curve[0]["eval_accuracy"], "eval_accuracy_base": base_score}, step=0)
    if options.train_base:
        registry.client.log_artifact(run_id, config.model.base_weights, "base")  # the weights beside their curves
    rng = random.Random(options.seed)
    step, log_every = 0, max(1, len(train) // options.batch_size // 25)  # ~25 loss points per epoch
    for epoch in range(1, options.epochs + 1):
        order = list(train)
        rng.shuffle(order)
        losses, correct, scored = [], 0, 0
        last_say = time.monotonic()
        for start in range(0, len(order), options.batch_size):
            report = learner.learn(order[start : start + options.batch_size])
            step += 1
            losses.append(report.loss)
            targets = {ex.event_id: ex.target for ex in order[start : start + options.batch_size]}
            correct += sum(int(targets[eid] == pred) for eid, pred in report.predictions)
            scored += len(report.predictions)
            registry_metrics = {"loss": report.loss} if report.loss == report.loss else {}
            if registry_metrics and step % log_every == 0:
                registry.log_metrics(run_id, registry_metrics, step=step)
            if time.monotonic() - last_say > 5:
                say(
                    f"retrain: epoch {epoch}/{options.epochs} {min(start + options.batch_size, len(order)):,}/{len(order):,} examples"
                )
                last_say = time.monotonic()
        finite = [x for x in losses if x == x]
        row = {
            "epoch": float(epoch),
            "loss": sum(finite) / len(finite) if finite else float("nan"),
            "train_accuracy": correct / scored if scored else float("nan"),
            "eval_accuracy": score_adapter(model, 0, held),
        }
        curve.append(row)
        registry.log_metrics(run_id, {f"epoch_{k}": v for k, v in row.items() if k != "epoch" and v == v}, step=epoch)
        say(
            f"retrain: epoch {epoch}/{options.epochs}: loss {row['loss']:.4f}, train accuracy {row['train_accuracy']:.3f}, "
            f"held-out accuracy {row['eval_accuracy']:.3f}"
        )

    final = curve[-1]
    version = registry.publish(
        model.adapter_state(0),
        tags=VersionTags(
            base_version=config.model.base_version,
            parent_version=parent or "",
            source="retrain",
            events_seen=len(train),
            reason="offline retrain",
            since=_iso(options.since),
            until=_iso(options.until),
            eval_accuracy=final["eval_accuracy"],
        ),
        metrics={"eval_accuracy": final["eval_accuracy"], "eval_accuracy_base": base_score},
        run_id=run_id,
        step=options.epochs,
    )
    registry.client.set_terminated(run_id)
    say(f"retrain: registered version {version} of {config.mlflow.model_name} (run {run_id})")
    if options.announce:
        _announce(config, version, parent, len(train), final["eval_accuracy"])
        say(f"retrain: announced version {version} as a challenger on {config.topics.events}")
    return RetrainResult(version, run_id, counts, base_score, curve, config.model.base_weights or None)


def _train_base(
    config: Config,
    model: torch.nn.Module,
    train: list[Example],
    options: RetrainOptions,
    held: list[Example],
    seeded_score: float,
    say: Say,
) -> Config:
    """Train the base's own weights, save them, and return the config that builds that base."""
    from cl.learning.base_training import train_base
    from cl.model.base_model import load_base_weights, save_base_weights

    rows = train if options.train_base == "feedback" else load_dataset(options.train_base, config)
    say(f"retrain: training the base on {len(rows):,} examples ({options.train_base})")
    train_base(
        model,
        rows,
        epochs=options.epochs,
        lr=options.lr or 3e-3,
        batch_size=options.batch_size,
        seed=options.seed,
        say=say,
    )
    state_dir = config.state_dir if config.state_dir.is_absolute() else Path.cwd() / config.state_dir
    path = save_base_weights(model, state_dir.resolve() / "bases" / f"base-{int(time.time() * 1000)}.safetensors")
    load_base_weights(model, path)  # from here on exactly the model every process builds from that file
    say(
        f"retrain: base held-out accuracy {seeded_score:.3f} (seeded) -> {score_adapter(model, -1, held):.3f} (trained); "
        f"saved {path}"
    )
    say(
        f'retrain: to serve on it, set model.base_weights = "{path}" (CL_MODEL_BASE_WEIGHTS) and restart cl serve and cl learn'
    )
    values = config.to_dict()
    values["model"]["base_weights"] = str(path)
    return Config.from_dict(values)


def load_dataset(path: str, config: Config) -> list[Example]:
    """Labelled rows of a JSON-lines file: ``{"features": [...], "label": 2}`` or ``{"text": "...", "label": 2}``."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise RetrainError(
            f"--train-base {path}: cannot read it ({e.strerror}); give a JSON-lines file or 'feedback'"
        ) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            label = row["label"]
            features, text = row.get("features"), row.get("text")
            ex = Example(
                f"dataset-{number}",
                f"dataset-{number}",
                "predict",
                "label",
                text=text,
                features=None if features is None else tuple(float(x) for x in features),
                served_label=label,
                target=label,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise RetrainError(
                f"--train-base {path} line {number}: {e!r}; each line must be "
                '{"features": [numbers], "label": int} or {"text": "...", "label": int}'
            ) from None
        reason = check_example(ex, base_model_config(config.model))
        if reason is not None:
            raise RetrainError(f"--train-base {path} line {number}: {reason}")
        rows.append(ex)
    if not rows:
        raise RetrainError(f"--train-base {path}: no rows; give one JSON object per line")
    return rows


def _announce(config: Config, version: str, parent: str | None, n: int, eval_accuracy: float) -> None:
    from streams import EventProducer

    published = VersionPublished(
        version=version,
        model_name=config.mlflow.model_name,
        base_version=config.model.base_version,
        parent_version=parent or "",
        events_seen=n,
        reason="offline retrain",
        role="challenger",
        source="retrain",
        metrics={"eval_accuracy": eval_accuracy},
    )
    producer = EventProducer(config.kafka.bootstrap_servers, client_id=f"{config.app}-retrain")
    try:
        producer.send_and_wait(config.topics.events, published.to_event())
    finally:
        producer.close()


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def parse_time(text: str) -> float:
    """Unix seconds from unix seconds or an ISO 8601 time (UTC unless it names a zone).

    >>> parse_time("1700000000"), parse_time("2023-11-14T22:13:20")
    (1700000000.0, 1700000000.0)
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; use unix seconds or ISO 8601 like 2026-11-01T08:00"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m learners.retrain", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The retrain's options (shared by ``cl retrain``)."""
    parser.add_argument(
        "--since",
        type=parse_time,
        help="replay feedback from this time (unix seconds or ISO 8601; default: the beginning)",
    )
    parser.add_argument("--until", type=parse_time, help="replay feedback up to this time (default: now)")
    parser.add_argument(
        "--continue-from", help="a version number or alias (champion) to continue from (default: a fresh adapter)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="passes over the replayed feedback (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step (default 64)")
    parser.add_argument("--lr", type=float, help="learning rate (default: learner.lr)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-announce", action="store_true", help="register the version but do not announce it on cl.events"
    )
    parser.add_argument(
        "--train-base",
        nargs="?",
        const="feedback",
        metavar="DATASET",
        help="first train the base model's own weights, on the replayed labels or on a JSON-lines file "
        "of {features|text, label}; saves them for model.base_weights",
    )


def options_from(args: argparse.Namespace) -> RetrainOptions:
    return RetrainOptions(
        since=args.since,
        until=args.until,
        continue_from=args.continue_from,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        announce=not args.no_announce,
        train_base=args.train_base,
    )


def main(argv: list[str] | None = None) -> int:
    from cl.config import ConfigError, load_config

    args = build_parser().parse_args(argv)
    try:
        config = load_config()
        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
        result = retrain(config, options_from(args), say=lambda line: print(line, flush=True))
    except (ConfigError, RetrainError, ValueError) as e:
        print(f"retrain: {e}", file=sys.stderr)
        return 2
    print(f"retrain finished: version {result.version}, held-out accuracy {result.curve[-1]['eval_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
