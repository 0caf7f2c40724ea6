"""Access control and its record: API keys with roles, the audit trail, rate limits."""

from cl.security.audit import AuditTrail, audit_event, cli_actor, rollout_actor
from cl.security.keys import AccessDenied, Grant, KeyRecord, KeyStore, parse_duration
from cl.security.rate_limit import RateLimiter

__all__ = [
    "AccessDenied",
    "AuditTrail",
    "Grant",
    "KeyRecord",
    "KeyStore",
    "RateLimiter",
    "audit_event",
    "cli_actor",
    "parse_duration",
    "rollout_actor",
]
