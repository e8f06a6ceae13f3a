"""What a provider call can fail with: transient (worth a retry) or permanent (not)."""

from __future__ import annotations


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
