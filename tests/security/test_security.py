"""API keys, the audit trail and the rate limiter, on their own (files in a temp dir)."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from cl.security import AccessDenied, AuditTrail, KeyStore, RateLimiter, parse_duration


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


def test_a_key_is_stored_only_as_its_hash_in_a_private_file(store: KeyStore):
    key, record = store.create("alice", {"predict": None, "feedback": 60.0}, now=1000.0)
    text = store.path.read_text()
    assert key not in text and key.split("_", 2)[2] not in text
    assert record.key_sha256 in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.authenticate(key).name == "alice"


@pytest.mark.parametrize(
    ("presented", "reason"),
    [(None, "missing"), ("", "missing"), ("hunter2", "malformed"), ("cl_0000abcd_" + "x" * 43, "unknown")],
)
def test_missing_malformed_and_unknown_keys_are_401(store: KeyStore, presented, reason):
    store.create("alice", {"predict": None})
    with pytest.raises(AccessDenied) as e:
        store.authenticate(presented)
    assert (e.value.status, e.value.reason) == (401, reason)
    assert "cl keys create" in str(e.value)


def test_a_right_id_with_a_wrong_secret_is_401(store: KeyStore):
    key, record = store.create("alice", {"predict": None})
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with pytest.raises(AccessDenied) as e:
        store.authenticate(forged)
    assert (e.value.status, e.value.reason, e.value.key_id) == (401, "unknown", record.key_id)


def test_a_revoked_key_is_refused_by_a_reader_that_loaded_it_before(store: KeyStore):
    key, record = store.create("alice", {"predict": None})
    reader = KeyStore(store.path)  # e.g. an ingress replica
    assert reader.authenticate(key).key_id == record.key_id
    store.revoke(record.key_id)
    with pytest.raises(AccessDenied) as e:
        reader.authenticate(key)
    assert (e.value.status, e.value.reason) == (401, "revoked")
    assert store.get(record.key_id).status() == "revoked"


def test_roles_admin_and_expiring_grants(store: KeyStore):
    _, user = store.create("svc", {"predict": None, "feedback": 100.0}, now=0.0)
    _, admin = store.create("ops", {"admin": None}, now=0.0)
    assert user.allows("predict", now=50.0) and user.allows("feedback", now=50.0)
    assert not user.allows("feedback", now=100.0)  # the grant expired
    assert not user.allows("admin", now=0.0)
    assert all(admin.allows(role, now=1e12) for role in ("predict", "feedback", "admin"))
    with pytest.raises(AccessDenied) as e:
        user.check("feedback", now=150.0)
    assert (e.value.status, e.value.reason) == (403, "expired")
    with pytest.raises(AccessDenied) as e:
        user.check("admin", now=0.0)
    assert (e.value.status, e.value.reason) == (403, "no_role")
    assert "--role admin" in str(e.value) and "predict" in str(e.value)
    _, lapsed = store.create("old", {"predict": 1.0}, now=0.0)
    assert lapsed.status(now=5.0) == "expired"
    with pytest.raises(AccessDenied):
        lapsed.check(None, now=5.0)


def test_bad_roles_names_and_durations_say_what_to_use(store: KeyStore):
    with pytest.raises(ValueError, match="predict, feedback, admin"):
        store.create("x", {"root": None})
    with pytest.raises(ValueError, match="none given"):
        store.create("x", {})
    with pytest.raises(ValueError, match="name"):
        store.create(" ", {"predict": None})
    with pytest.raises(KeyError, match="cl keys list"):
        store.revoke("deadbeef")
    assert parse_duration("90s") == 90 and parse_duration("12h") == 43200 and parse_duration("2w") == 1209600
    for bad in ("", "10", "-1h", "1y", "0m"):
        with pytest.raises(ValueError, match="e.g. 90s"):
            parse_duration(bad)


def test_concurrent_creates_lose_no_key(store: KeyStore):
    made: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        key, _ = KeyStore(store.path).create(f"k{i}", {"predict": None})
        with lock:
            made.append(key)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list()) == 16
    assert all(store.authenticate(key) for key in made)


def test_the_audit_chain_detects_an_edit_a_removal_and_an_insertion(tmp_path: Path):
    trail = AuditTrail(tmp_path / "audit.jsonl")
    for i in range(5):
        trail.append("promote", actor="key:aa (ops)", outcome="ok", details={"version": str(i)})
    assert trail.verify() == (5, None)
    assert [r["seq"] for r in trail.read(2)] == [4, 5]
    lines = trail.path.read_text().splitlines()

    edited = json.loads(lines[2])
    edited["details"]["version"] = "99"
    trail.path.write_text("\n".join(lines[:2] + [json.dumps(edited)] + lines[3:]) + "\n")
    assert trail.verify()[0] == 2 and "changed" in trail.verify()[1]

    trail.path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    assert trail.verify()[0] == 2 and "removed or inserted" in trail.verify()[1]

    trail.path.write_text("\n".join(lines[:3] + [lines[1]] + lines[3:]) + "\n")
    assert trail.verify()[0] == 3

    trail.path.write_text("\n".join(lines) + "\n")
    trail.append("rollback", actor="cli:me", outcome="ok")
    assert trail.verify() == (6, None)


def test_concurrent_appends_keep_one_chain(tmp_path: Path):
    path = tmp_path / "audit.jsonl"

    def write(i: int) -> None:
        trail = AuditTrail(path)  # e.g. one per process
        for j in range(20):
            trail.append("auth_failed", actor=f"client:{i}", outcome="401 unknown", details={"j": j})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert AuditTrail(path).verify() == (80, None)


def test_rate_limiter_allows_the_burst_then_the_rate_per_key():
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", now=0.0) == pytest.approx(0.5)
    assert limiter.take("b", now=0.0) == 0.0  # another key has its own bucket
    assert limiter.take("a", now=0.5) == 0.0  # one token refilled
    assert limiter.take("a", now=0.5) > 0
    allowed = sum(limiter.take("c", now=t / 100) == 0.0 for t in range(1000))  # 10 s at 100 tries/s
    assert allowed == pytest.approx(3 + 2 * 10, abs=1)
