"""Tasks that translate and speak."""

from __future__ import annotations

from prefect import task

from storyloom import services
from storyloom.models import Language
from storyloom.providers.base import Speech, Written
from tasks.policy import api_slot, honour_retry_after, paid_call_options

PAID = paid_call_options()


@task(name="translate", **PAID)
def translate(text: str, source: Language, target: Language, via: str) -> Written:
    """Translate one piece of text that fits in one request."""
    translator = services.providers().translator
    with honour_retry_after(), api_slot("translation", translator.name):
        return translator.translate(text, source, target)


@task(name="speak", **PAID)
def speak(text: str, language: Language, via: str) -> Speech:
    """Speak one piece of a chapter that fits in one request."""
    speaker = services.providers().speaker
    with honour_retry_after(), api_slot("speech", speaker.name):
        return speaker.speak(text, language)
