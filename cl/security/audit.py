"""The audit trail: an append-only, hash-chained JSON-lines file, the service's one record of changes.

Every admin action (promote, rollback, traffic change, key created or revoked), every
decision of the rollout controller (automatic ones included) and every refused request
(401/403/429) is one line. Each line carries the sha256 of the line before it, so a line
edited, dropped or inserted later breaks the chain, and ``cl audit --verify`` says where.
Appends from several processes (each ingress replica, the rollout controller, ``cl keys``)
are serialised by a lock on the file itself. Records are also announced on ``cl.events``
by whoever writes them (:func:`audit_event`), so a remote consumer sees them too.

A record's ``actor`` says who: ``key:<id> (<name>)`` (an API key), ``client:<address>`` (auth
off, or no valid key), ``cli:<user>`` (:func:`cli_actor`) or ``rollout:<app>``
(:func:`rollout_actor`, the controller's own decisions).

Example:
    >>> import tempfile, pathlib
    >>> trail = AuditTrail(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
    >>> _ = trail.append("promote", actor="key:1a2b3c4d (ops)", outcome="ok", details={"version": "7"})
    >>> _ = trail.append("rollout_advance", actor=rollout_actor("cl"), outcome="ok", details={"version": "7"})
    >>> [r["action"] for r in trail.read()], [r["action"] for r in trail.read(5, actor="rollout:cl")]
    (['promote', 'rollout_advance'], ['rollout_advance'])
    >>> trail.verify()
    (2, None)
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cl.events import LifecycleEvent

__all__ = ["AuditTrail", "audit_event", "cli_actor", "rollout_actor"]

GENESIS = "0" * 64


def _chain_hash(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _lines_backwards(f: Any, block: int = 4096) -> Iterator[bytes]:
    """The file's non-empty lines, newest first, read from the end in blocks (not the whole file)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    rest = b""
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        lines = (f.read(end - start) + rest).split(b"\n")
        end = start
        rest = lines.pop(0) if start > 0 else b""  # may be the tail of a line that starts further back
        yield from (line for line in reversed(lines) if line.strip())
    if rest.strip():
        yield rest


def cli_actor() -> str:
    """How a change made with the ``cl`` command is attributed: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in a container is not an error
        return "cli:unknown"


def rollout_actor(app: str) -> str:
    """How the rollout controller of application ``app`` signs its own decisions."""
    return f"rollout:{app}"


def audit_event(record: dict[str, Any]) -> LifecycleEvent:
    """The ``cl.events`` announcement of an audit record: ``LifecycleEvent(type="audit")``."""
    return LifecycleEvent(type="audit", payload=record)


class AuditTrail:
    """Appends records to ``path`` and reads them back.

    Args:
        path: The JSON-lines file (its folder is created).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, action: str, *, actor: str, outcome: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write one record and return it (with its ``seq``, ``ts``, ``prev`` and ``hash``).

        Args:
            action: What was done or tried, e.g. ``promote``, ``key_created``, ``auth_failed``.
            actor: Who: ``key:<id> (<name>)``, ``cli:<user>``, or the client address.
            outcome: ``ok``, or why it was refused (e.g. ``401 unknown``).
            details: Anything else worth keeping (JSON values).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            last = next(_lines_backwards(f), b"")
            prev = json.loads(last) if last else {"seq": 0, "hash": GENESIS}
            record = {
                "seq": prev["seq"] + 1,
                "ts": time.time(),
                "action": action,
                "actor": actor,
                "outcome": outcome,
                "details": details or {},
                "prev": prev["hash"],
            }
            record["hash"] = _chain_hash(prev["hash"], record)
            f.seek(0, os.SEEK_END)
            f.write((json.dumps(record, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        return record

    def read(self, limit: int | None = None, *, actor: str | None = None) -> list[dict[str, Any]]:
        """The records, oldest first.

        Args:
            limit: Only the newest ``limit`` (read from the end of the file); None or 0: all.
            actor: Only the records of this actor, e.g. :func:`rollout_actor`.
        """
        if not self.path.exists():
            return []
        needle = b"" if actor is None else json.dumps(actor).encode()  # as append wrote it: a cheap pre-filter

        def records(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
            for line in lines:
                if line.strip() and needle in line:
                    record = json.loads(line)
                    if actor is None or record.get("actor") == actor:
                        yield record

        with open(self.path, "rb") as f:
            if not limit:
                return list(records(f))
            return list(itertools.islice(records(_lines_backwards(f)), limit))[::-1]

    def verify(self) -> tuple[int, str | None]:
        """Check the chain: ``(records checked, None)`` or ``(records before the break, what broke)``."""
        prev, n = GENESIS, 0
        if not self.path.exists():
            return 0, None
        with open(self.path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return n, f"line {lineno} is not JSON"
                if record.get("prev") != prev or record.get("seq") != n + 1:
                    return (
                        n,
                        f"line {lineno} (seq {record.get('seq')}) does not follow the record before it: a record was removed or inserted",
                    )
                if _chain_hash(prev, record) != record.get("hash"):
                    return n, f"line {lineno} (seq {record.get('seq')}) was changed after it was written"
                prev, n = record["hash"], n + 1
        return n, None
