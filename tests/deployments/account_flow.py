"""A flow test_worker.py deploys to see a worker stop on account errors: one real paid
call (a translation through storyloom's Sarvam client and its paid-call policy), made
with whatever key the worker's environment holds."""

from __future__ import annotations

from prefect import flow

from tasks.narration import translate


@flow(name="account-probe")
def account_probe(text: str) -> str:
    """Translate `text` into Hindi."""
    return translate(text, "en-IN", "hi-IN", via="sarvam").text
