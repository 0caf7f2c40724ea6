"""API keys with roles: created once, stored only as hashes, checked on every request.

A key looks like ``cl_<key_id>_<secret>``: the ``key_id`` (8 hex digits) finds the record,
the whole key's sha256 proves it. Keys are 256 random bits, so a plain sha256 is enough to
make a stolen key file useless (slow password hashes exist for guessable passwords, which
these are not); the comparison is constant-time.

Each key holds *grants*: a role (``predict``, ``feedback`` or ``admin``) with an optional
expiry. ``admin`` may also predict and post feedback. The store is one JSON file, written
atomically under a file lock, so ``cl keys`` and every ingress replica on the machine share
it; readers reload it when it changes, so a revocation applies to the next request.

Example:
    >>> import tempfile, pathlib
    >>> store = KeyStore(pathlib.Path(tempfile.mkdtemp()) / "keys.json")
    >>> secret, record = store.create("alice", {"predict": None})
    >>> key = store.authenticate(secret)
    >>> key.name, key.allows("predict"), key.allows("admin")
    ('alice', True, False)
    >>> store.revoke(record.key_id).status()
    'revoked'
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping

from cl.config import ROLES

__all__ = ["AccessDenied", "Grant", "KeyRecord", "KeyStore", "parse_duration"]

KEY_PREFIX = "cl_"
_KEY = re.compile(r"^cl_([0-9a-f]{8})_([A-Za-z0-9_-]{20,})$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"30d"``, ``"2w"`` -> seconds.

    Raises:
        ValueError: naming the accepted forms.
    """
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; use a positive number and a unit, e.g. 90s, 15m, 12h, 30d or 2w")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class AccessDenied(Exception):
    """A key that may not make a request: ``status`` 401 (who are you?) or 403 (not allowed).

    The server side's refusal of a key (the ingress answers it as 401/403 and audits it). It is
    not :class:`cl.client.AuthError`, which is what the SDK raises when it gets such an answer.

    Attributes:
        status: 401 or 403.
        reason: short code for the audit trail: ``missing``, ``malformed``, ``unknown``,
            ``revoked``, ``no_role`` or ``expired``.
        key_id: the key's id when the key named one.
    """

    def __init__(self, status: int, reason: str, message: str, key_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.key_id = key_id


@dataclass(frozen=True)
class Grant:
    """One role a key holds, until ``expires_at`` (unix seconds; None: no expiry)."""

    role: str
    expires_at: float | None = None

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class KeyRecord:
    """What the store keeps about a key: never the key itself, only its sha256."""

    key_id: str
    name: str
    key_sha256: str
    grants: tuple[Grant, ...]
    created_at: float
    revoked_at: float | None = None

    def status(self, now: float | None = None) -> str:
        """``active``, ``expired`` (every grant has) or ``revoked``."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        return "active" if any(g.active(now) for g in self.grants) else "expired"

    def allows(self, role: str, now: float | None = None) -> bool:
        """Whether the key may act as ``role`` now (``admin`` may do everything)."""
        now = time.time() if now is None else now
        return self.revoked_at is None and any(g.active(now) and g.role in (role, "admin") for g in self.grants)

    def check(self, role: str | None, now: float | None = None) -> None:
        """Raise ``AccessDenied(403)`` unless the key may act as ``role`` (None: any role)."""
        now = time.time() if now is None else now
        if role is None:
            if self.status(now) != "active":
                raise AccessDenied(
                    403,
                    "expired",
                    f"every grant of key {self.key_id} ({self.name}) has expired; "
                    "create a new key with `cl keys create`",
                    self.key_id,
                )
            return
        if self.allows(role, now):
            return
        lapsed = [g for g in self.grants if g.role in (role, "admin") and not g.active(now)]
        if lapsed:
            raise AccessDenied(
                403,
                "expired",
                f"key {self.key_id} ({self.name}) had the '{role}' role until "
                f"{_when(max(g.expires_at or 0 for g in lapsed))}; create a new key with "
                f"`cl keys create --role {role}`",
                self.key_id,
            )
        held = ", ".join(g.role for g in self.grants if g.active(now)) or "none"
        raise AccessDenied(
            403,
            "no_role",
            f"key {self.key_id} ({self.name}) lacks the '{role}' role (it holds: {held}); "
            f"use a key made with `cl keys create --role {role}`",
            self.key_id,
        )

    def describe(self, now: float | None = None) -> dict:
        """Plain values for ``cl keys list`` (no hash)."""
        now = time.time() if now is None else now
        return {
            "key_id": self.key_id,
            "name": self.name,
            "status": self.status(now),
            "roles": {g.role: _when(g.expires_at) for g in self.grants},
            "created": _when(self.created_at),
            "revoked": None if self.revoked_at is None else _when(self.revoked_at),
        }

    @staticmethod
    def from_dict(d: Mapping) -> KeyRecord:
        return KeyRecord(**{**d, "grants": tuple(Grant(**g) for g in d["grants"])})


@dataclass
class KeyStore:
    """The key file: create, list and revoke keys; authenticate a presented key.

    Args:
        path: The JSON file (created with mode 0600 on first write).
    """

    path: Path
    _cache: tuple[tuple[int, int, int], dict[str, KeyRecord]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    # -- reading -------------------------------------------------------------------------

    def _records(self) -> dict[str, KeyRecord]:
        """Every record by key id, re-read only when the file changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache is None or self._cache[0] != stamp:
            data = json.loads(self.path.read_text() or "{}")
            self._cache = (stamp, {r["key_id"]: KeyRecord.from_dict(r) for r in data.get("keys", [])})
        return self._cache[1]

    def list(self) -> list[KeyRecord]:
        """Every key, oldest first (revoked ones too: they stay for the audit trail)."""
        return sorted(self._records().values(), key=lambda r: r.created_at)

    def get(self, key_id: str) -> KeyRecord:
        """The record of ``key_id``; KeyError names ``cl keys list``."""
        record = self._records().get(key_id)
        if record is None:
            raise KeyError(f"no key {key_id!r}; `cl keys list` shows the ids")
        return record

    def authenticate(self, presented: str | None, now: float | None = None) -> KeyRecord:
        """The record of a presented key.

        Raises:
            AccessDenied: 401 when the key is missing, malformed, unknown or revoked.
        """
        if not presented:
            raise AccessDenied(
                401,
                "missing",
                "no API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                "(create one with `cl keys create`)",
            )
        match = _KEY.match(presented.strip())
        if not match:
            raise AccessDenied(
                401,
                "malformed",
                "the API key is malformed; keys look like cl_<8 hex digits>_<secret>, as `cl keys create` prints them",
            )
        key_id = match.group(1)
        record = self._records().get(key_id)
        if record is None or not hmac.compare_digest(record.key_sha256, _digest(presented.strip())):
            raise AccessDenied(
                401, "unknown", "the API key is not valid; check it, or create one with `cl keys create`", key_id
            )
        if record.revoked_at is not None:
            raise AccessDenied(
                401,
                "revoked",
                f"key {key_id} ({record.name}) was revoked at {_when(record.revoked_at)}; ask an admin for a new key",
                key_id,
            )
        return record

    # -- writing -------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, KeyRecord]]:
        """Read-modify-write under an exclusive lock; the file is replaced atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._cache = None
            records = dict(self._records())
            yield records
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            body = {"version": 1, "keys": [asdict(r) for r in sorted(records.values(), key=lambda r: r.created_at)]}
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(body, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._cache = None

    def create(self, name: str, roles: Mapping[str, float | None], now: float | None = None) -> tuple[str, KeyRecord]:
        """Make a key holding ``roles`` (role -> seconds until it expires, or None).

        Returns:
            ``(key, record)``: the key is shown this once and never stored.

        Raises:
            ValueError: an unknown role, an empty name or no roles.
        """
        now = time.time() if now is None else now
        if not name.strip():
            raise ValueError("name: give the key a name that says who holds it, e.g. --name checkout-service")
        unknown = [r for r in roles if r not in ROLES]
        if unknown or not roles:
            raise ValueError(f"role: {', '.join(unknown) or 'none given'}; use one or more of {', '.join(ROLES)}")
        grants = tuple(Grant(role, None if ttl is None else now + ttl) for role, ttl in roles.items())
        with self._locked() as records:
            key_id = secrets.token_hex(4)
            while key_id in records:
                key_id = secrets.token_hex(4)
            secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            record = KeyRecord(key_id, name.strip(), _digest(secret), grants, created_at=now)
            records[key_id] = record
        return secret, record

    def revoke(self, key_id: str, now: float | None = None) -> KeyRecord:
        """Revoke ``key_id`` at once (its record stays, marked revoked).

        Raises:
            KeyError: no such key.
        """
        now = time.time() if now is None else now
        with self._locked() as records:
            if key_id not in records:
                raise KeyError(f"no key {key_id!r}; `cl keys list` shows the ids")
            if records[key_id].revoked_at is None:
                records[key_id] = replace(records[key_id], revoked_at=now)
            return records[key_id]
