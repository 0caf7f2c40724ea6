"""The ``cl`` command: one table of subcommands, each a small typed function.

The commands live by area (``stack``, ``evaluation``, ``security``, ``admin``, ``adapters``); this module is
the one table, the parser built from it and the entry point. The CLI is the service's
composition root, the one place in ``cl`` that reaches into the other packages; it does so
lazily, inside each command, so ``cl config show`` stays fast. A test keeps this table,
``cl --help`` and the README in step.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cl.cli import adapters, admin, evaluation, security, stack
from cl.config import Config, ConfigError, load_config

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


@dataclass(frozen=True)
class Command:
    """One row of the table: the words that name it, what it does, its arguments."""

    words: tuple[str, ...]
    run: Callable[[Config, argparse.Namespace], int]
    help: str
    args: tuple[tuple[tuple[str, ...], dict], ...] = field(default=())

    @property
    def name(self) -> str:
        return " ".join(self.words)


_JSON = (("--json",), {"action": "store_true", "help": "print JSON instead of text"})

_OUT = (
    ("--out",),
    {"default": "docs/eval", "help": "folder for the Markdown reports and PNG plots (default docs/eval)"},
)


_MAX_EVENTS = (("--max-events",), {"type": int, "help": "stop the learner after this many applied events"})

_IDLE_EXIT = (("--idle-exit",), {"type": float, "help": "stop the learner after this many idle seconds"})

_FOREGROUND = (("--foreground",), {"action": "store_true", "help": "run in this process instead of as a Ray job"})

_REQUESTS = (("--requests",), {"type": int, "default": 4000, "help": "simulated requests to send (default 4000)"})


_DROP = (
    ("--drop-unsupported",),
    {
        "action": "store_true",
        "help": "leave out the targets the other format cannot hold (e.g. the classify head LoRA) instead of refusing",
    },
)

_ROLE = (
    ("--role",),
    {
        "action": "append",
        "metavar": "ROLE[:DURATION]",
        "help": "predict, feedback or admin, optionally expiring, e.g. admin:1h (repeat for several)",
    },
)


COMMANDS: tuple[Command, ...] = (
    Command(
        ("up",), stack.up, "start Kafka, MLflow and Ray locally (or use the ones configured) and create the topics"
    ),
    Command(("down",), stack.down, "stop the services that `cl up` started"),
    Command(
        ("status",), stack.status, "show each service's address, health and version; exit 1 if one is down", (_JSON,)
    ),
    Command(
        ("config", "show"), stack.config_show, "print the resolved configuration (file + CL_* environment)", (_JSON,)
    ),
    Command(("serve",), stack.serve, "deploy the model-serving application on Ray Serve and print its URL"),
    Command(
        ("learn",),
        stack.learn,
        "start the online learner (a Ray Train job) on the feedback stream",
        (_MAX_EVENTS, _IDLE_EXIT, _FOREGROUND),
    ),
    Command(
        ("retrain",),
        stack.retrain,
        "replay the feedback history into a new adapter as a Ray job and register it as a "
        "challenger (options: `cl retrain -- --help`)",
        (
            (("--wait",), {"action": "store_true", "help": "follow the job's log until it ends"}),
            (("retrain_args",), {"nargs": argparse.REMAINDER, "help": "options of python -m learners.retrain"}),
        ),
    ),
    Command(
        ("eval",),
        evaluation.eval_protocols,
        "run the evaluation protocols (digits, drifting streams, detectors, language feedback) "
        "with their baselines and write Markdown reports with plots",
        (
            (("--quick",), {"action": "store_true", "help": "the small sizes the test suite uses"}),
            (("--only",), {"help": "comma-separated protocols, e.g. digits,detector_calibration"}),
            _OUT,
        ),
    ),
    Command(
        ("report",),
        evaluation.report,
        "plot the running service's learning curve with its drifts, promotions and rollbacks "
        "(from cl.events) and rebuild the reports' index",
        (_OUT,),
    ),
    Command(
        ("profile",),
        evaluation.profile,
        "measure the model's latency (p50/p95/p99), throughput and peak memory per batch "
        "size: a classify forward and a generation, base only or with mixed adapters",
        (
            (
                ("--preset",),
                {"help": "a model preset: tiny, small, base or large (default: model.preset of the config)"},
            ),
            (
                ("--batch-size",),
                {
                    "type": evaluation.batch_sizes,
                    "action": "append",
                    "metavar": "N[,N...]",
                    "help": "batch sizes, one row each (repeat or comma list; default 1,8,32)",
                },
            ),
            (("--seq-len",), {"type": int, "default": 64, "help": "tokens per row, and prompt length (default 64)"}),
            (("--new-tokens",), {"type": int, "default": 16, "help": "tokens generated per row (default 16)"}),
            (
                ("--adapters",),
                {"type": int, "default": 0, "help": "distinct LoRA adapters mixed in a batch (default 0: base only)"},
            ),
            (("--iters",), {"type": int, "default": 50, "help": "timed iterations per measure (default 50)"}),
            (("--warmup",), {"type": int, "default": 5, "help": "untimed iterations before them (default 5)"}),
            (("--device",), {"choices": ("cpu", "cuda"), "help": "default: cuda if available, else cpu"}),
            _JSON,
        ),
    ),
    Command(
        ("bench",),
        evaluation.bench,
        "run the benchmarks (python -m bench); those on the local stack need `cl up` first",
        ((("--only",), {"help": "comma-separated, from kernels,rollout,online,rollback,soak (default: all)"}),),
    ),
    Command(
        ("demo",),
        stack.demo,
        "simulated users call the service and rate it; their preferences change halfway",
        (_REQUESTS,),
    ),
    Command(
        ("run",),
        stack.run,
        "up + serve + learn + demo: the whole service with its local defaults",
        (_MAX_EVENTS, _IDLE_EXIT, _FOREGROUND, _REQUESTS),
    ),
    Command(
        ("versions",),
        admin.versions,
        "list adapter versions with their aliases and traffic, and the rollout's state",
        (_JSON,),
    ),
    Command(
        ("promote",),
        admin.promote,
        "make a version the champion now",
        ((("version",), {"help": "a registered version, e.g. 7 (or base)"}),),
    ),
    Command(
        ("rollback",),
        admin.rollback,
        "take the challenger's traffic to 0, or (--to) make any version the champion again",
        ((("--to",), {"help": "the version to serve as champion, e.g. 5 or base"}),),
    ),
    Command(
        ("traffic",),
        admin.traffic,
        "set a challenger's share of the traffic",
        (
            (("version",), {"help": "a challenger of the running rollout"}),
            (("weight",), {"type": float, "help": "its share, 0 to 1"}),
        ),
    ),
    Command(
        ("export",),
        adapters.export,
        "write a registered version as a PEFT LoRA directory (adapter_config.json + adapter_model.safetensors) "
        "for the checkpoint it was trained on",
        (
            (("version",), {"help": "a registered version or alias, e.g. 7 or champion"}),
            (("--format",), {"choices": ("peft",), "default": "peft", "help": "the adapter format (peft)"}),
            (("dir",), {"metavar": "DIR", "help": "the directory to write"}),
            _DROP,
        ),
    ),
    Command(
        ("import-adapter",),
        adapters.import_adapter,
        "register a PEFT LoRA directory as a new adapter version of the configured checkpoint",
        ((("dir",), {"metavar": "DIR", "help": "a PEFT LoRA directory (adapter_config.json + safetensors)"}), _DROP),
    ),
    Command(
        ("keys", "create"),
        security.keys_create,
        "create an API key with roles (predict, feedback, admin), each optionally expiring; prints the key once",
        (
            (("--name",), {"required": True, "help": "who holds it, e.g. checkout-service"}),
            _ROLE,
            (("--expires-in",), {"help": "expiry of roles given without one, e.g. 30d (default: never)"}),
            _JSON,
        ),
    ),
    Command(
        ("keys", "list"),
        security.keys_list,
        "list API keys: id, name, status, roles and their expiry (never the keys)",
        (_JSON,),
    ),
    Command(
        ("keys", "revoke"),
        security.keys_revoke,
        "revoke an API key at once",
        ((("key_id",), {"help": "the key's id, as `cl keys list` shows it"}),),
    ),
    Command(
        ("audit",),
        security.audit,
        "show the audit trail of admin actions, key changes and refused requests",
        (
            (("--limit",), {"type": int, "default": 50, "help": "newest records to show (default 50; 0: all)"}),
            (("--verify",), {"action": "store_true", "help": "check the hash chain; exit 1 if a record was altered"}),
            _JSON,
        ),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl", description="Online continual-learning service on Ray.")
    parser.add_argument("--config", help="TOML config file (default: $CL_CONFIG or ./cl.toml)")
    parser.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="serve and learn on this Hugging Face MoE checkpoint directory instead of the preset "
        "(sets model.checkpoint, as CL_MODEL_CHECKPOINT does)",
    )
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", metavar="COMMAND")
    }
    for command in COMMANDS:
        for depth in range(1, len(command.words)):
            prefix = command.words[:depth]
            if prefix not in groups:
                sub = groups[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = sub.add_subparsers(dest=f"command_{depth}", metavar="COMMAND", required=True)
        sub = groups[command.words[:-1]].add_parser(command.words[-1], help=command.help, description=command.help)
        for flags, kwargs in command.args:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cl`` console script; returns the process exit code."""
    from infra.errors import StackError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        env = {**os.environ, "CL_MODEL_CHECKPOINT": str(Path(args.checkpoint).resolve())} if args.checkpoint else None
        config = load_config(args.config if args.config else "auto", env=env)
        return args.handler(config, args)
    except ConfigError as e:
        print(f"cl: {e}", file=sys.stderr)
        return 2
    except StackError as e:
        print(f"cl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cl config show | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
