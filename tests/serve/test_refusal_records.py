"""The audit trail records refusals without flooding: once per reason, caller and path per window."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from cl.config import Config


def _request(path: str, key: str | None) -> Request:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return Request({"type": "http", "method": "POST", "path": path, "headers": headers, "client": ("10.0.0.7", 5)})


def test_a_refusal_on_another_path_is_recorded_at_once_and_a_repeat_is_counted(tmp_path):
    from cl.security import AuditTrail, KeyStore
    from serve._private.access import Access, Caller
    from serve._private.errors import Refusal

    values = Config().to_dict()
    values["auth"].update(enabled=True, keys_file=str(tmp_path / "keys.json"), audit_file=str(tmp_path / "audit.jsonl"))
    config = Config.from_dict(values)
    key, _ = KeyStore(config.keys_path).create("predictor", {"predict": None})
    announced: list[dict] = []
    access = Access(config, announce=announced.append)

    async def admit(path: str, role: str) -> Caller | Refusal:
        try:
            return await access.admit(_request(path, key), role)
        except Refusal as refusal:
            return refusal

    async def refusals() -> list:
        return [
            await admit(path, role)
            for path, role in (
                ("/v1/feedback", "feedback"),
                ("/v1/feedback", "feedback"),
                ("/v1/feedback", "feedback"),
                ("/v1/admin/promote", "admin"),
                ("/v1/predict", "predict"),
                ("/v1/admin/promote", "admin"),
            )
        ]

    answers = asyncio.run(refusals())
    assert [getattr(a, "status", 200) for a in answers] == [403, 403, 403, 403, 200, 403]
    assert isinstance(answers[4], Caller)
    records = [r for r in AuditTrail(config.audit_path).read() if r["action"] == "auth_failed"]
    assert [r["details"]["path"] for r in records] == ["/v1/feedback", "/v1/admin/promote"]
    assert access.refused == 5 and [r["seq"] for r in announced] == [r["seq"] for r in records]

    access._last_recorded = {k: (at - 60.0, n) for k, (at, n) in access._last_recorded.items()}  # the window passed
    assert asyncio.run(admit("/v1/feedback", "feedback")).status == 403
    last = AuditTrail(config.audit_path).read()[-1]
    assert last["details"]["path"] == "/v1/feedback" and last["details"]["also_refused_since_last_record"] == 2
