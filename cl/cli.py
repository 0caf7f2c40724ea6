"""The ``cl`` command: one table of subcommands, each a small typed function.

The CLI is the service's composition root, the one place in ``cl`` that reaches into the
other packages; it does so lazily, inside each command, so ``cl config show`` stays fast.
A test keeps this table, ``cl --help`` and the README in step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from cl.config import Config, ConfigError, load_config

__all__ = ["COMMANDS", "Command", "main"]


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


def _up(config: Config, args: argparse.Namespace) -> int:
    from infra.stack import up

    statuses = up(config)
    print("\nThe stack is up:")
    for s in statuses:
        print("  " + s.line())
    print(f"\n  MLflow UI:      {config.mlflow.tracking_uri}")
    print(f"  Ray dashboard:  {config.ray.dashboard_url}")
    print(f"  Submit a job:   ray job submit --address {config.ray.dashboard_url} -- python -c 'print(1)'")
    print("  Stop it all:    cl down")
    return 0 if all(s.healthy for s in statuses) else 1


def _down(config: Config, args: argparse.Namespace) -> int:
    from infra.stack import down

    down(config)
    return 0


def _status(config: Config, args: argparse.Namespace) -> int:
    from infra.stack import status

    statuses = status(config)
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        for s in statuses:
            print(s.line())
    down = [s.name for s in statuses if not s.healthy]
    if down:
        print(f"\n{', '.join(down)} down: run `cl up` to start what is missing.", file=sys.stderr)
        return 1
    return 0


def _config_show(config: Config, args: argparse.Namespace) -> int:
    values = config.to_dict()
    if args.json:
        print(json.dumps(values, indent=2))
        return 0
    def line(key: str, value: object) -> str:
        # TOML has no null: an unset key is shown as a comment, as it would be left out of cl.toml.
        return f"# {key} is unset" if value is None else f"{key} = {json.dumps(value)}"

    print("\n".join(line(k, v) for k, v in values.items() if not isinstance(v, dict)))
    for section, table in values.items():
        if isinstance(table, dict):
            print(f"\n[{section}]")
            print("\n".join(line(k, v) for k, v in table.items()))
    return 0


_JSON = (("--json",), {"action": "store_true", "help": "print JSON instead of text"})

COMMANDS: tuple[Command, ...] = (
    Command(("up",), _up, "start Kafka, MLflow and Ray locally (or use the ones configured) and create the topics"),
    Command(("down",), _down, "stop the services that `cl up` started"),
    Command(("status",), _status, "show each service's address, health and version; exit 1 if one is down", (_JSON,)),
    Command(("config", "show"), _config_show, "print the resolved configuration (file + CL_* environment)", (_JSON,)),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cl", description="Online continual-learning service on Ray.")
    parser.add_argument("--config", help="TOML config file (default: $CL_CONFIG or ./cl.toml)")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command", metavar="COMMAND")}
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
        config = load_config(args.config if args.config else "auto")
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


if __name__ == "__main__":
    sys.exit(main())
