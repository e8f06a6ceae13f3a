"""Webhooks: every job's final state, POSTed to each of its tenant's URLs, signed.

The body is the job as `GET /v1/jobs/{id}` shows it. Headers:
`Storyloom-Timestamp: <unix seconds>` and
`Storyloom-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; a receiver
recomputes the HMAC with the secret it was given and refuses old timestamps. A delivery
is retried with backoff (1 s doubling to 5 minutes) until it is taken (2xx) or
`webhook_retry_seconds` have passed; every attempt is recorded (`GET
/v1/webhooks/{id}/deliveries`). Each job is told once per webhook, whichever API
process sees its end first (a unique row claims it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from storyloom import jobs, services
from storyloom.settings import get_settings

log = logging.getLogger("storyloom.webhooks")
TIMESTAMP_HEADER = "Storyloom-Timestamp"
SIGNATURE_HEADER = "Storyloom-Signature"
MAX_BACKOFF_SECONDS = 300.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at timestamp."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, tolerance: float = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


class Deliverer:
    """Watches the jobs of tenants with webhooks and delivers their final states; one
    background thread per API process."""

    def __init__(
        self, describe: Callable[[str], dict[str, Any] | None], interval: float = 1.0
    ) -> None:
        self.describe = describe  # job id -> the job as the API shows it
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=10, follow_redirects=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad moment for the database or Prefect: next tick
                log.exception("webhook deliveries: this round failed")
            self._stop.wait(self.interval)

    def tick(self) -> None:
        """One round: queue deliveries for jobs that ended, send the ones due."""
        store = services.store()
        since = datetime.now(UTC) - timedelta(days=7)
        for tenant_id, _ in store.tenants():
            hooks = store.webhooks(tenant_id)
            if not hooks:
                continue
            oldest = min(h.created_at for h in hooks)
            records = store.jobs(tenant_id=tenant_id, since=max(since, oldest), limit=500)
            told = {hook.id: store.told(hook.id) for hook in hooks}
            # Jobs since the hook was added that it has not been told of yet.
            waiting = {
                hook.id: [
                    r
                    for r in records
                    if r.created_at >= hook.created_at and r.id not in told[hook.id]
                ]
                for hook in hooks
            }
            ids = sorted({r.id for pending in waiting.values() for r in pending})
            states = jobs.run_states(ids)
            for hook_id, pending in waiting.items():
                for record in pending:
                    state = states.get(record.id)
                    if state is not None and state.final:
                        store.open_delivery(hook_id, record.id, state.state)
        for delivery in store.due_deliveries():
            self._attempt(delivery)

    def _attempt(self, delivery: Any) -> None:
        store = services.store()
        found = store.webhook(delivery.webhook_id)
        if found is None:
            return
        hook, secret = found
        body = json.dumps(
            {"type": "job.finished", "job": self.describe(delivery.job_id)},
            sort_keys=True, default=str,
        ).encode()  # fmt: skip
        stamp = int(time.time())
        code: int | None = None
        error: str | None = None
        try:
            answer = self._http.post(
                hook.url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: str(stamp),
                    SIGNATURE_HEADER: sign(secret, stamp, body),
                    "User-Agent": "storyloom-webhooks/1",
                },
            )
            code = answer.status_code
            delivered = 200 <= code < 300
            if not delivered:
                error = f"answered {code}"
        except httpx.HTTPError as exc:
            delivered, error = False, f"{type(exc).__name__}: could not deliver"
        retry_at = None
        if not delivered:
            waited = (datetime.now(UTC) - delivery.created_at).total_seconds()
            backoff = min(MAX_BACKOFF_SECONDS, 2.0**delivery.attempts)
            if waited + backoff <= get_settings().webhook_retry_seconds:
                retry_at = datetime.now(UTC) + timedelta(seconds=backoff)
        store.record_attempt(
            delivery.id, code=code, error=error, delivered=delivered, retry_at=retry_at
        )
