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
    print(json.dumps(config.to_dict(), indent=2) if args.json else config.to_toml(), end="" if not args.json else "\n")
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    from serve.app import deploy

    url = deploy(config)
    print(f"serving at {url}  (OpenAPI: {url}/docs, models: {url}/v1/models)")
    return 0


def _learn(config: Config, args: argparse.Namespace) -> int:
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


def _retrain(config: Config, args: argparse.Namespace) -> int:
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


def _eval(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cl.evaluation.suite import PROTOCOLS, check_names, run_suite

    try:
        names = check_names(args.only.split(",")) if args.only else list(PROTOCOLS)
    except ValueError as e:
        print(f"cl eval: --only: {e}", file=sys.stderr)
        return 2
    results = run_suite(names, quick=args.quick, out=Path(args.out), config=config)
    missed = [f"{r.name}: {g.name}" for r in results for g in r.goals if not g.met]
    print(f"\nreports in {args.out}/ (index: {args.out}/README.md)" + (f"; goals not met: {', '.join(missed)}" if missed else ""))
    return 0


def _report(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from cl.evaluation.report import write_index, write_report
    from cl.evaluation.service_report import read_service_history, service_report

    out = Path(args.out)
    path = write_report(service_report(read_service_history(config), config.mlflow.model_name), out, written_by="cl report")
    write_index(out)
    print(f"service report: {path} (index: {out}/README.md)")
    return 0


def _profile(config: Config, args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from cl.base_model import base_model_config
    from cl.profiling import format_table, profile_model

    preset = args.preset or config.model.preset
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [n for group in args.batch_size or [[1, 8, 32]] for n in group]
    # The replica's model: [model] with the preset asked for, and its bank of serve.adapter_cache_size slots.
    slots = max(args.adapters, config.serve.adapter_cache_size)

    def say(line: str) -> None:
        print(f"cl profile: {line}", file=sys.stderr, flush=True)

    say(f"preset {preset} on {device}, batch sizes {sizes}, {args.warmup} + {args.iters} iterations each")
    try:  # ModelConfigError (an unknown preset names the known ones) is a ValueError too
        model_cfg = base_model_config(dataclasses.replace(config.model, preset=preset), n_adapter_slots=slots)
        rows = profile_model(model_cfg, sizes, seq_len=args.seq_len, new_tokens=args.new_tokens, adapters=args.adapters,
                             iters=args.iters, warmup=args.warmup, device=device, progress=say)  # fmt: skip
    except ValueError as e:
        print(f"cl profile: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"preset": preset, **r.to_dict()} for r in rows], indent=2))
        return 0
    r = rows[0]
    print(f"preset {preset} ({r.parameters:,} parameters) on {r.device} ({r.threads} torch threads); seq_len {r.seq_len}, "
          f"{r.new_tokens} new tokens; {f'{args.adapters} adapters mixed per batch' if args.adapters else 'base only'}; "
          f"{r.warmup} warm-up + {r.iters} timed iterations\n"
          f"peak MB: {r.memory}\n")  # fmt: skip
    print(format_table(rows))
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of batch sizes; give ints >= 1, e.g. 1,8,32")
    return sizes


def _bench(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "bench" / "__main__.py").is_file():
        print(f"cl bench: no bench/ beside {checkout / 'cl'}; run it from a source checkout", file=sys.stderr)
        return 1
    if str(checkout) not in sys.path:  # bench/ is not an installed package
        sys.path.insert(0, str(checkout))
    from bench.__main__ import BENCHMARKS, run, select
    from infra.stack import status

    try:
        names = select(args.only)
    except ValueError as e:
        print(f"cl bench: --only: {e}", file=sys.stderr)
        return 2
    stacked = [n for n in names if BENCHMARKS[n].needs_stack]
    down = [s for s in status(config) if not s.healthy] if stacked else []
    if down:
        print(f"cl bench: {', '.join(stacked)} {'needs' if len(stacked) == 1 else 'need'} the local stack, and "
              f"{', '.join(s.name for s in down)} {'is' if len(down) == 1 else 'are'} down: start it with `cl up` "
              "(or run `make bench`, which does), then run `cl bench` again; "
              f"`cl bench --only kernels,rollout` needs no stack.", file=sys.stderr)  # fmt: skip
        for s in down:
            print("  " + s.line(), file=sys.stderr)
        return 1
    if args.config:  # the benchmarks read the config themselves
        os.environ["CL_CONFIG"] = args.config
    return run(names)


def _demo(config: Config, args: argparse.Namespace) -> int:
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
    result = run_demo(config, url, requests=args.requests, api_key=client_key)
    half = len(result.correct) // 2
    print(f"\ndemo done: positive-rating rate {result.accuracy(0, half):.1%} before the shift, "
          f"{result.accuracy(half, half + 400):.1%} right after it, {result.accuracy(-400):.1%} at the end; "
          f"{len(result.published)} versions published, {len(result.drift_at)} drift detection(s).")  # fmt: skip
    print(f"learning curves: {config.mlflow.tracking_uri} (experiment {config.mlflow.model_name})")
    return 0 if result.errors == 0 else 1


def _run(config: Config, args: argparse.Namespace) -> int:
    for step in (_up, _serve, _learn, _demo):
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
            _audit_cli(config, "key_revoked", {"key_id": record.key_id, "name": record.name, "why": "replaced by cl demo"})
    made = {}
    for name, roles in wanted.items():
        made[name], record = store.create(name, roles)
        _audit_cli(config, "key_created", {"key_id": record.key_id, "name": name, "roles": record.describe()["roles"]})
    return made


def _audit_cli(config: Config, action: str, details: dict) -> None:
    """Record a change made from the command line in the audit trail and announce it on cl.events."""
    from cl.security import AuditTrail
    from serve._private.access import announce_audit, cli_actor
    from streams import EventProducer
    from streams.errors import ProduceError

    record = AuditTrail(config.audit_path).append(action, actor=cli_actor(), outcome="ok", details=details)
    try:
        producer = EventProducer(config.kafka.bootstrap_servers, client_id=f"{config.app}-cli")
        announce_audit(producer, config, record)
        producer.close(timeout_s=5.0)
    except ProduceError as e:
        print(f"cl: {action} is in the audit trail ({config.audit_path}) but not announced on "
              f"{config.topics.events}: {e}", file=sys.stderr)  # fmt: skip


def _keys_create(config: Config, args: argparse.Namespace) -> int:
    from cl.security import KeyStore, parse_duration

    try:
        default_ttl = parse_duration(args.expires_in) if args.expires_in else None
        roles: dict[str, float | None] = {}
        for spec in args.role or []:
            role, _, ttl = spec.partition(":")
            roles[role.strip()] = parse_duration(ttl) if ttl else default_ttl
        key, record = KeyStore(config.keys_path).create(args.name, roles)
    except ValueError as e:
        print(f"cl keys create: {e}", file=sys.stderr)
        return 2
    info = record.describe()
    _audit_cli(config, "key_created", {"key_id": record.key_id, "name": record.name, "roles": info["roles"]})
    if args.json:
        print(json.dumps({"key": key, **info}, indent=2))
        return 0
    roles_text = ", ".join(f"{r} (expires {when})" for r, when in info["roles"].items())
    print(f"key {record.key_id} ({record.name}): {roles_text}\n{key}\n"
          "Shown once; only its hash is kept. Send it as 'Authorization: Bearer <key>' (or set CL_API_KEY for cl).")
    return 0


def _keys_list(config: Config, args: argparse.Namespace) -> int:
    from cl.security import KeyStore

    keys = [r.describe() for r in KeyStore(config.keys_path).list()]
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    print(f"{'key_id':<9} {'name':<20} {'status':<8} {'created':<24} roles (expiry)")
    for k in keys:
        roles = ", ".join(f"{r} ({when})" for r, when in k["roles"].items())
        print(f"{k['key_id']:<9} {k['name'][:20]:<20} {k['status']:<8} {k['created']:<24} {roles}")
    if not keys:
        print(f"(no keys in {config.keys_path}; create one with `cl keys create --name NAME --role predict`)")
    return 0


def _keys_revoke(config: Config, args: argparse.Namespace) -> int:
    from cl.security import KeyStore

    try:
        record = KeyStore(config.keys_path).revoke(args.key_id)
    except KeyError as e:
        print(f"cl keys revoke: {e.args[0]}", file=sys.stderr)
        return 1
    _audit_cli(config, "key_revoked", {"key_id": record.key_id, "name": record.name})
    print(f"key {record.key_id} ({record.name}) revoked; the service refuses it from the next request on")
    return 0


def _audit(config: Config, args: argparse.Namespace) -> int:
    import time

    from cl.security import AuditTrail

    trail = AuditTrail(config.audit_path)
    if args.verify:
        n, problem = trail.verify()
        if problem:
            print(f"cl audit: the audit trail {config.audit_path} is broken after {n} good records: {problem}", file=sys.stderr)
            return 1
        print(f"{n} records, chain intact ({config.audit_path})")
        return 0
    records = trail.read(args.limit)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))
        details = ", ".join(f"{k}={v}" for k, v in r["details"].items() if k not in ("message", "decisions"))
        print(f"{r['seq']:>6}  {when}  {r['action']:<13} {r['actor']:<30} {r['outcome']:<18} {details}")
    if not records:
        print(f"(the audit trail {config.audit_path} is empty)")
    return 0


def _admin(config: Config, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call the running service with ``$CL_API_KEY``; (exit code, JSON answer). Errors are printed with their fix."""
    import httpx

    url = f"http://{config.serve.host}:{config.serve.port}"
    key = os.environ.get("CL_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(method, url + path, json=body, headers=headers, timeout=30.0)
    except httpx.HTTPError as e:
        print(f"cl: the service does not answer at {url} ({e}); start it with `cl serve`", file=sys.stderr)
        return 1, {}
    data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        detail = data.get("detail", response.text)
        messages = [f"{d.get('field', '')}: {d.get('msg', d)}" for d in detail] if isinstance(detail, list) else [str(detail)]
        print(f"cl: {method} {path} refused ({response.status_code}): " + "; ".join(messages), file=sys.stderr)
        if response.status_code in (401, 403):
            print("cl: set CL_API_KEY to a key with the admin role (`cl keys create --name ops --role admin`; "
                  "`cl run` prints one)", file=sys.stderr)  # fmt: skip
        return 1, data
    return 0, data


def _print_decisions(code: int, data: dict) -> int:
    for d in data.get("decisions", []):
        print(f"{d['action']:>8} {d['version']}: {d['reason']}")
    return code


def _versions(config: Config, args: argparse.Namespace) -> int:
    code, models = _admin(config, "GET", "/v1/models")
    if code:
        return code
    _, rollout = _admin(config, "GET", "/v1/rollout")
    if args.json:
        print(json.dumps({"models": models, "rollout": rollout}, indent=2))
        return 0
    weights = rollout.get("weights", {}) if rollout.get("enabled") else {}
    print(f"{'version':>8}  {'aliases':<22} {'traffic':>7}  events_seen  reason")
    for v in models["versions"]:
        share = f"{weights[v['version']]:.0%}" if v["version"] in weights else ""
        print(f"{v['version']:>8}  {','.join(v['aliases']):<22} {share:>7}  {v['tags'].get('events_seen', ''):>11}  "
              f"{v['tags'].get('reason', '')}")  # fmt: skip
    if rollout.get("enabled"):
        state = f"rollout {rollout['rollout_id']} of {', '.join(rollout['challengers'])}" if rollout.get("active") else "no rollout"
        print(f"\nchampion: {rollout['champion']}; {state}")
        for d in rollout.get("explain", []):
            print(f"  {d['action']} {d['version']}: {d['reason']}")
    else:
        print("\nrollouts are off (serve.serve_new_versions = true): the newest version serves everyone")
    return 0


def _promote(config: Config, args: argparse.Namespace) -> int:
    return _print_decisions(*_admin(config, "POST", "/v1/admin/promote", {"version": args.version}))


def _rollback(config: Config, args: argparse.Namespace) -> int:
    return _print_decisions(*_admin(config, "POST", "/v1/admin/rollback", {"to_version": args.to}))


def _traffic(config: Config, args: argparse.Namespace) -> int:
    return _print_decisions(*_admin(config, "POST", "/v1/admin/traffic", {"version": args.version, "weight": args.weight}))


_JSON = (("--json",), {"action": "store_true", "help": "print JSON instead of text"})
_OUT = (("--out",), {"default": "docs/eval", "help": "folder for the Markdown reports and PNG plots (default docs/eval)"})

_MAX_EVENTS = (("--max-events",), {"type": int, "help": "stop the learner after this many applied events"})
_IDLE_EXIT = (("--idle-exit",), {"type": float, "help": "stop the learner after this many idle seconds"})
_FOREGROUND = (("--foreground",), {"action": "store_true", "help": "run in this process instead of as a Ray job"})
_REQUESTS = (("--requests",), {"type": int, "default": 4000, "help": "simulated requests to send (default 4000)"})

_ROLE = (("--role",), {"action": "append", "metavar": "ROLE[:DURATION]",
                       "help": "predict, feedback or admin, optionally expiring, e.g. admin:1h (repeat for several)"})

COMMANDS: tuple[Command, ...] = (
    Command(("up",), _up, "start Kafka, MLflow and Ray locally (or use the ones configured) and create the topics"),
    Command(("down",), _down, "stop the services that `cl up` started"),
    Command(("status",), _status, "show each service's address, health and version; exit 1 if one is down", (_JSON,)),
    Command(("config", "show"), _config_show, "print the resolved configuration (file + CL_* environment)", (_JSON,)),
    Command(("serve",), _serve, "deploy the model-serving application on Ray Serve and print its URL"),
    Command(("learn",), _learn, "start the online learner (a Ray Train job) on the feedback stream",
            (_MAX_EVENTS, _IDLE_EXIT, _FOREGROUND)),
    Command(("retrain",), _retrain, "replay the feedback history into a new adapter as a Ray job and register it as a "
            "challenger (options: `cl retrain -- --help`)",
            ((("--wait",), {"action": "store_true", "help": "follow the job's log until it ends"}),
             (("retrain_args",), {"nargs": argparse.REMAINDER, "help": "options of python -m learners.retrain"}))),
    Command(("eval",), _eval, "run the evaluation protocols (digits, drifting streams, detectors, language feedback) "
            "with their baselines and write Markdown reports with plots",
            ((("--quick",), {"action": "store_true", "help": "the small sizes the test suite uses"}),
             (("--only",), {"help": "comma-separated protocols, e.g. digits,detector_calibration"}), _OUT)),
    Command(("report",), _report, "plot the running service's learning curve with its drifts, promotions and rollbacks "
            "(from cl.events) and rebuild the reports' index", (_OUT,)),
    Command(("profile",), _profile, "measure the model's latency (p50/p95/p99), throughput and peak memory per batch "
            "size: a classify forward and a generation, base only or with mixed adapters",
            ((("--preset",), {"help": "a model preset: tiny, small, base or large (default: model.preset of the config)"}),
             (("--batch-size",), {"type": _batch_sizes, "action": "append", "metavar": "N[,N...]",
                                  "help": "batch sizes, one row each (repeat or comma list; default 1,8,32)"}),
             (("--seq-len",), {"type": int, "default": 64, "help": "tokens per row, and prompt length (default 64)"}),
             (("--new-tokens",), {"type": int, "default": 16, "help": "tokens generated per row (default 16)"}),
             (("--adapters",), {"type": int, "default": 0, "help": "distinct LoRA adapters mixed in a batch (default 0: base only)"}),
             (("--iters",), {"type": int, "default": 50, "help": "timed iterations per measure (default 50)"}),
             (("--warmup",), {"type": int, "default": 5, "help": "untimed iterations before them (default 5)"}),
             (("--device",), {"choices": ("cpu", "cuda"), "help": "default: cuda if available, else cpu"}), _JSON)),
    Command(("bench",), _bench, "run the benchmarks (python -m bench); those on the local stack need `cl up` first",
            ((("--only",), {"help": "comma-separated, from kernels,rollout,online,rollback,soak (default: all)"}),)),
    Command(("demo",), _demo, "simulated users call the service and rate it; their preferences change halfway", (_REQUESTS,)),
    Command(("run",), _run, "up + serve + learn + demo: the whole service with its local defaults",
            (_MAX_EVENTS, _IDLE_EXIT, _FOREGROUND, _REQUESTS)),
    Command(("versions",), _versions, "list adapter versions with their aliases and traffic, and the rollout's state", (_JSON,)),
    Command(("promote",), _promote, "make a version the champion now",
            ((("version",), {"help": "a registered version, e.g. 7 (or base)"}),)),
    Command(("rollback",), _rollback, "take the challenger's traffic to 0, or (--to) make any version the champion again",
            ((("--to",), {"help": "the version to serve as champion, e.g. 5 or base"}),)),
    Command(("traffic",), _traffic, "set a challenger's share of the traffic",
            ((("version",), {"help": "a challenger of the running rollout"}),
             (("weight",), {"type": float, "help": "its share, 0 to 1"}))),
    Command(("keys", "create"), _keys_create, "create an API key with roles (predict, feedback, admin), each optionally "
            "expiring; prints the key once",
            ((("--name",), {"required": True, "help": "who holds it, e.g. checkout-service"}), _ROLE,
             (("--expires-in",), {"help": "expiry of roles given without one, e.g. 30d (default: never)"}), _JSON)),
    Command(("keys", "list"), _keys_list, "list API keys: id, name, status, roles and their expiry (never the keys)", (_JSON,)),
    Command(("keys", "revoke"), _keys_revoke, "revoke an API key at once",
            ((("key_id",), {"help": "the key's id, as `cl keys list` shows it"}),)),
    Command(("audit",), _audit, "show the audit trail of admin actions, key changes and refused requests",
            ((("--limit",), {"type": int, "default": 50, "help": "newest records to show (default 50; 0: all)"}),
             (("--verify",), {"action": "store_true", "help": "check the hash chain; exit 1 if a record was altered"}),
             _JSON)),
)  # fmt: skip


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
