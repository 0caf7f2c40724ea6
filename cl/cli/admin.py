"""Commands that steer a running service's versions: list, promote, roll back, set traffic.

They call the service through :class:`cl.client.Client` with ``$CL_API_KEY``, so they retry
what the SDK retries and print its errors, which name the field and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Callable

from cl.client import AuthError, Client, RolloutDecisions, ServiceError, Unreachable
from cl.config import Config

__all__ = ["promote", "rollback", "traffic", "versions"]


def _call(config: Config, action: Callable[[Client], object]) -> tuple[int, object]:
    """Run ``action`` on a client of the running service; (exit code, its answer). Errors are printed."""
    url = f"http://{config.serve.host}:{config.serve.port}"
    try:
        with Client(url, timeout=30.0, retries=2) as client:
            return 0, action(client)
    except Unreachable as e:
        print(f"cl: the service does not answer at {url} ({e}); start it with `cl serve`", file=sys.stderr)
    except ServiceError as e:
        print(f"cl: {e}", file=sys.stderr)
        if isinstance(e, AuthError):
            print(
                "cl: set CL_API_KEY to a key with the admin role (`cl keys create --name ops --role admin`; "
                "`cl run` prints one)",
                file=sys.stderr,
            )
    return 1, None


def _print_decisions(code: int, taken: RolloutDecisions | None) -> int:
    for d in taken.decisions if taken else ():
        print(f"{d.action:>8} {d.version}: {d.reason}")
    return code


def versions(config: Config, args: argparse.Namespace) -> int:
    code, listing = _call(config, Client.versions)
    if code:
        return code
    if args.json:
        models = dataclasses.asdict(listing)
        models.pop("rollout")
        print(json.dumps({"models": models, "rollout": listing.rollout.raw}, indent=2))
        return 0
    rollout = listing.rollout
    weights = rollout.weights if rollout.enabled else {}
    print(f"{'version':>8}  {'aliases':<22} {'traffic':>7}  events_seen  reason")
    for v in listing.versions:
        share = f"{weights[v.version]:.0%}" if v.version in weights else ""
        print(
            f"{v.version:>8}  {','.join(v.aliases):<22} {share:>7}  {v.tags.get('events_seen', ''):>11}  "
            f"{v.tags.get('reason', '')}"
        )
    if rollout.enabled:
        state = f"rollout {rollout.rollout_id} of {', '.join(rollout.challengers)}" if rollout.active else "no rollout"
        print(f"\nchampion: {rollout.champion}; {state}")
        for d in rollout.explain:
            print(f"  {d.action} {d.version}: {d.reason}")
    else:
        print("\nrollouts are off (serve.serve_new_versions = true): the newest version serves everyone")
    return 0


def promote(config: Config, args: argparse.Namespace) -> int:
    return _print_decisions(*_call(config, lambda client: client.promote(args.version)))


def rollback(config: Config, args: argparse.Namespace) -> int:
    return _print_decisions(*_call(config, lambda client: client.rollback(args.to)))


def traffic(config: Config, args: argparse.Namespace) -> int:
    return _print_decisions(*_call(config, lambda client: client.traffic(args.version, args.weight)))
