"""What a provider call can fail with: transient (worth a retry) or permanent (not)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


class ProviderError(Exception):
    """A provider call failed. The message names the provider and never holds a secret."""

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.status = status


class TransientError(ProviderError):
    """Worth retrying: rate limits, 5xx, timeouts, dropped connections."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after = retry_after  # seconds the server asked us to wait, if it said


class PermanentError(ProviderError):
    """Not worth retrying: bad key, bad request, exhausted quota, a safety block."""


class AccountError(PermanentError):
    """Every call to this provider will fail the same way: a bad or revoked key, an
    exhausted quota. A run stops at the first one instead of paying for a batch."""


class SafetyBlockError(PermanentError):
    """The provider refused the content (a prompt or output safety block)."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header, given as seconds or as an HTTP date; None if absent."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT even when it fails to say so
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
