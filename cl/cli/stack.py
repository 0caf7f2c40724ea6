"""Commands that run the service: the local stack, serving, the learner, retrains, the demo."""

from __future__ import annotations

import argparse
import json
import sys

from cl.cli.security import audit_cli
from cl.config import Config

__all__ = ["config_show", "demo", "down", "learn", "retrain", "run", "serve", "status", "up"]


def up(config: Config, args: argparse.Namespace) -> int:
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


def down(config: Config, args: argparse.Namespace) -> int:
    from infra.stack import down

    down(config)
    return 0


def status(config: Config, args: argparse.Namespace) -> int:
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


def config_show(config: Config, args: argparse.Namespace) -> int:
    print(json.dumps(config.to_dict(), indent=2) if args.json else config.to_toml(), end="" if not args.json else "\n")
    return 0


def serve(config: Config, args: argparse.Namespace) -> int:
    from serve.app import deploy

    url = deploy(config)
    print(f"serving at {url}  (OpenAPI: {url}/docs, models: {url}/v1/models)")
    return 0


def learn(config: Config, args: argparse.Namespace) -> int:
    if args.foreground:
        from learners.feedback_loop import LoopLimits
        from learners.online import run_online_learner

        limits = LoopLimits(max_events=args.max_events, idle_exit_s=args.idle_exit)
        print(f"learner finished: {run_online_learner(config, limits).metrics}")
        return 0
    from learners.jobs import submit_learner

    job_id = submit_learner(config, max_events=args.max_events, idle_exit_s=args.idle_exit)
    print(f"learner running as Ray job {job_id}")
    print(f"  logs:  .venv/bin/ray job logs --follow --address {config.ray.dashboard_url} {job_id}")
    return 0


def retrain(config: Config, args: argparse.Namespace) -> int:
    from learners.jobs import follow_job, submit_retrain
    from learners.retrain import build_parser

    passed = [a for a in args.retrain_args if a != "--"]
    build_parser().parse_args(passed)  # a typo fails here, with argparse's message, not in the job
    job_id = submit_retrain(config, passed)
    print(f"retrain running as Ray job {job_id}")
    if not args.wait:
        print(f"  logs:  .venv/bin/ray job logs --follow --address {config.ray.dashboard_url} {job_id}")
        return 0
    status = follow_job(config, job_id)
    print(f"retrain job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def demo(config: Config, args: argparse.Namespace) -> int:
    from cl.client import Client
    from serve.app import base_url
    from serve.demo import run_demo

    url = base_url(config)
    client_key = None
    if config.auth.enabled:
        keys = _demo_keys(config)
        client_key = keys["demo-client"]
        print("API keys made for the demo (valid 24 h; shown once, only their hashes are kept):")
        print(f"  demo-client (predict, feedback): {keys['demo-client']}")
        print(f"  demo-admin  (admin):             {keys['demo-admin']}")
        print(f"  e.g. export CL_API_KEY={keys['demo-admin']}  # for cl versions / promote / rollback / traffic\n")
    print(f"demo: {args.requests} simulated requests with ratings against {url}")
    # Five tries per call: a rate-limited (429) or busy (503) feedback post waits as its Retry-After says.
    with Client(url, api_key=client_key or "", timeout=30.0, retries=4) as client:
        result = run_demo(config, client, requests=args.requests)
    half = len(result.correct) // 2
    print(
        f"\ndemo done: positive-rating rate {result.accuracy(0, half):.1%} before the shift, "
        f"{result.accuracy(half, half + 400):.1%} right after it, {result.accuracy(-400):.1%} at the end; "
        f"{len(result.published)} versions published, {len(result.drift_at)} drift detection(s)."
    )
    print(f"learning curves: {config.mlflow.tracking_uri} (experiment {config.mlflow.model_name})")
    return 0 if result.errors == 0 else 1


def run(config: Config, args: argparse.Namespace) -> int:
    for step in (up, serve, learn, demo):
        code = step(config, args)
        if code != 0:
            return code
    print(f"\nThe service keeps running: {config.serve.host}:{config.serve.port}. Stop it with `cl down`.")
    return 0


def _demo_keys(config: Config) -> dict[str, str]:
    """Fresh 24-hour keys for the demo (the previous demo keys are revoked): name -> key."""
    from cl.security import KeyStore

    store = KeyStore(config.keys_path)
    wanted = {"demo-client": {"predict": 86400.0, "feedback": 86400.0}, "demo-admin": {"admin": 86400.0}}
    for record in store.list():
        if record.name in wanted and record.status() == "active":
            store.revoke(record.key_id)
            audit_cli(
                config, "key_revoked", {"key_id": record.key_id, "name": record.name, "why": "replaced by cl demo"}
            )
    made = {}
    for name, roles in wanted.items():
        made[name], record = store.create(name, roles)
        audit_cli(config, "key_created", {"key_id": record.key_id, "name": name, "roles": record.describe()["roles"]})
    return made
