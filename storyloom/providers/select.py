"""Which provider serves each role: the real one when its key is set, offline otherwise."""

from __future__ import annotations

from storyloom import prompts
from storyloom.providers.base import Illustrator, Providers, Speaker, Translator, Writer
from storyloom.settings import Choice, Settings


def wants_real(choice: Choice, has_key: bool, role: str, key_name: str) -> bool:
    """Decide one role; forcing 'real' without its key is a configuration error."""
    if choice == "offline":
        return False
    if choice == "real" and not has_key:
        raise ValueError(f"{role} is set to 'real' but {key_name} is not set")
    return has_key


def choose_providers(settings: Settings) -> Providers:
    """Build the providers for this process from the settings."""
    from storyloom.providers import offline

    gemini_key = settings.gemini_api_key
    sarvam_key = settings.sarvam_api_key
    use_text = wants_real(settings.text_provider, gemini_key is not None, "text", "GEMINI_API_KEY")
    use_image = wants_real(
        settings.image_provider, gemini_key is not None, "image", "GEMINI_API_KEY"
    )
    use_speech = wants_real(
        settings.speech_provider, sarvam_key is not None, "speech", "SARVAM_API_KEY"
    )

    writer: Writer = offline.OfflineWriter()
    illustrator: Illustrator = offline.OfflineIllustrator()
    speaker: Speaker = offline.OfflineSpeaker()
    translator: Translator = offline.OfflineTranslator()

    image_identity = ""
    if use_text or use_image:
        from storyloom.providers import google

        assert gemini_key is not None
        client = google.make_client(
            api_key=gemini_key.get_secret_value(),
            base_url=settings.gemini_base_url,
            api_version=settings.gemini_api_version,
            timeout_seconds=settings.gemini_timeout_seconds,
        )
        if use_text:
            writer = google.GoogleWriter(client, settings.gemini_text_model)
        if use_image:
            illustrator = google.GoogleIllustrator(
                client, settings.gemini_image_model, image_size=settings.gemini_image_size
            )
            image_identity = f" size={settings.gemini_image_size}"
    speech_identity = ""
    if use_speech:
        from storyloom.providers import sarvam

        assert sarvam_key is not None
        http = sarvam.make_http_client(settings.sarvam_timeout_seconds)
        speaker = sarvam.SarvamSpeaker(
            http,
            base_url=settings.sarvam_base_url,
            api_key=sarvam_key.get_secret_value(),
            model=settings.sarvam_tts_model,
            speaker=settings.sarvam_speaker,
            sample_rate=settings.sarvam_sample_rate,
        )
        speech_identity = (
            f" speaker={speaker.speaker} pace={speaker.pace} rate={speaker.sample_rate}"
        )
        translator = sarvam.SarvamTranslator(
            http,
            base_url=settings.sarvam_base_url,
            api_key=sarvam_key.get_secret_value(),
            model=settings.sarvam_translate_model,
        )

    return Providers(
        writer=writer,
        illustrator=illustrator,
        speaker=speaker,
        translator=translator,
        notes={
            "text": f"{writer.name} prompts={prompts.PROMPT_VERSION}",
            "image": f"{illustrator.name}{image_identity}",
            "speech": f"{speaker.name}{speech_identity}",
            "translation": translator.name,
        },
    )
