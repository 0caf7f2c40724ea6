"""Access control and its record: API keys with roles, the audit trail, rate limits."""

from cl.security.audit import AuditTrail
from cl.security.keys import AuthError, Grant, KeyRecord, KeyStore, parse_duration
from cl.security.rate_limit import RateLimiter

__all__ = ["AuditTrail", "AuthError", "Grant", "KeyRecord", "KeyStore", "RateLimiter", "parse_duration"]
