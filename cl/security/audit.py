"""The security audit trail: an append-only, hash-chained JSON-lines file.

Every admin action (promote, rollback, traffic change, key created or revoked) and every
refused request (401/403/429) is one line. Each line carries the sha256 of the line before
it, so a line edited, dropped or inserted later breaks the chain, and ``cl audit --verify``
says where. Appends from several processes (each ingress replica, ``cl keys``) are
serialised by a lock on the file itself. Records are also announced on ``cl.events`` by
whoever writes them (type ``audit``), so a remote consumer sees them too.

Example:
    >>> import tempfile, pathlib
    >>> trail = AuditTrail(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
    >>> _ = trail.append("promote", actor="key:1a2b3c4d (ops)", outcome="ok", details={"version": "7"})
    >>> [r["action"] for r in trail.read()], trail.verify()
    (['promote'], (1, None))
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["AuditTrail"]

GENESIS = "0" * 64


def _chain_hash(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def _last_line(f: Any) -> bytes:
    """The file's last non-empty line (reads backwards from the end, not the whole file)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    block, data = 4096, b""
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        data = f.read(end - start) + data
        end = start
        lines = data.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or start == 0:
            return lines[-1]
    return b""


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
            last = _last_line(f)
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

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The records, oldest first; only the newest ``limit`` when given."""
        if not self.path.exists():
            return []
        with open(self.path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return records[-limit:] if limit else records

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
