"""Commands for who may call the service: API keys and the audit trail."""

from __future__ import annotations

import argparse
import json
import sys

from cl.config import Config

__all__ = ["audit", "audit_cli", "keys_create", "keys_list", "keys_revoke"]


def audit_cli(config: Config, action: str, details: dict) -> None:
    """Record a change made from the command line in the audit trail and announce it on cl.events."""
    from cl.security import AuditTrail, audit_event, cli_actor
    from streams import EventProducer
    from streams.errors import ProduceError

    record = AuditTrail(config.audit_path).append(action, actor=cli_actor(), outcome="ok", details=details)
    try:
        producer = EventProducer(config.kafka.bootstrap_servers, client_id=f"{config.app}-cli")
        producer.send(config.topics.events, audit_event(record))
        producer.close(timeout_s=5.0)
    except ProduceError as e:
        print(
            f"cl: {action} is in the audit trail ({config.audit_path}) but not announced on "
            f"{config.topics.events}: {e}",
            file=sys.stderr,
        )


def keys_create(config: Config, args: argparse.Namespace) -> int:
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
    audit_cli(config, "key_created", {"key_id": record.key_id, "name": record.name, "roles": info["roles"]})
    if args.json:
        print(json.dumps({"key": key, **info}, indent=2))
        return 0
    roles_text = ", ".join(f"{r} (expires {when})" for r, when in info["roles"].items())
    print(
        f"key {record.key_id} ({record.name}): {roles_text}\n{key}\n"
        "Shown once; only its hash is kept. Send it as 'Authorization: Bearer <key>' (or set CL_API_KEY for cl)."
    )
    return 0


def keys_list(config: Config, args: argparse.Namespace) -> int:
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


def keys_revoke(config: Config, args: argparse.Namespace) -> int:
    from cl.security import KeyStore

    try:
        record = KeyStore(config.keys_path).revoke(args.key_id)
    except KeyError as e:
        print(f"cl keys revoke: {e.args[0]}", file=sys.stderr)
        return 1
    audit_cli(config, "key_revoked", {"key_id": record.key_id, "name": record.name})
    print(f"key {record.key_id} ({record.name}) revoked; the service refuses it from the next request on")
    return 0


def audit(config: Config, args: argparse.Namespace) -> int:
    import time

    from cl.security import AuditTrail

    trail = AuditTrail(config.audit_path)
    if args.verify:
        n, problem = trail.verify()
        if problem:
            print(
                f"cl audit: the audit trail {config.audit_path} is broken after {n} good records: {problem}",
                file=sys.stderr,
            )
            return 1
        print(f"{n} records, chain intact ({config.audit_path})")
        return 0
    records = trail.read(args.limit)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))
        details = ", ".join(
            f"{k}={v}" for k, v in r["details"].items() if k not in ("message", "decisions", "evidence", "action")
        )
        print(f"{r['seq']:>6}  {when}  {r['action']:<13} {r['actor']:<30} {r['outcome']:<18} {details}")
    if not records:
        print(f"(the audit trail {config.audit_path} is empty)")
    return 0
