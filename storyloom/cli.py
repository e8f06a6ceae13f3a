"""The `storyloom` command: add stories, generate books, look at them, run the demo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from storyloom.models import (
    LANGUAGES,
    Audience,
    CreativeStory,
    GenerationConfig,
    ImageStyle,
    LifeStory,
    Tone,
    WritingReport,
    parse_story,
)
from storyloom.settings import get_settings
from storyloom.store.schema import SchemaMismatchError

if TYPE_CHECKING:
    from storyloom.doctor import Check
    from storyloom.models import ExportFormat
    from storyloom.store.repository import StoryStore


class _Commands(TyperGroup):
    """Every command: a story database at the wrong schema revision ends it with one red
    line that names what to run, not a traceback."""

    def invoke(self, ctx: Any) -> Any:  # the click.Context of the click typer vendors
        try:
            return super().invoke(ctx)
        except SchemaMismatchError as exc:
            raise _fail(escape(str(exc))) from None


app = typer.Typer(
    cls=_Commands, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False
)
stories_app = typer.Typer(no_args_is_help=True, help="Add, list and show stories.")
app.add_typer(stories_app, name="stories")
console = Console()
err = Console(stderr=True)


# A width no line reaches: what a console in a pipe lays its output out to.
_UNBOUNDED = 1_000_000


def _fit_consoles() -> None:
    """Size the consoles for this invocation. On a terminal: COLUMNS when it is set. In
    a pipe or a log nothing is laid out to a width, whatever COLUMNS says: lines never
    wrap and a table takes its natural width, one row a line, so no printed id, path or
    URL is folded or cut (a script reads --json; grep and cut read these lines)."""
    columns = os.environ.get("COLUMNS", "")
    for out in (console, err):
        if not out.is_terminal:
            out.width = _UNBOUNDED
        elif columns.isdigit() and int(columns) > 0:
            out.width = int(columns)
        out.soft_wrap = not out.is_terminal


def _pin_paths() -> None:
    """A relative STORYLOOM_HOME or STORYLOOM_MEDIA_ROOT names a folder from where the
    command ran: pinned here as an absolute path, so the workers, servers and flow runs
    this process starts (each in a folder of its own) use the same one."""
    for name in ("STORYLOOM_HOME", "STORYLOOM_MEDIA_ROOT"):
        value = os.environ.get(name)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[name] = str(Path(value).expanduser().absolute())


@app.callback()
def _each_invocation() -> None:
    _fit_consoles()
    _pin_paths()


SAMPLES = Path(__file__).parent / "samples"
BAD_INPUT = 2


def _prepare_prefect(*, quiet: bool = True) -> None:
    # Prefect's database and results live under storyloom's home (absolute, whatever the
    # current folder), and the console stays quiet (every log still reaches the UI).
    os.environ.setdefault("PREFECT_HOME", str(get_settings().home / "prefect"))
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The embedded server starts its database on first use: on a busy two-core machine
    # that can take longer than Prefect's 20 s default, and the run would fail unpaid.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _say(line: str) -> None:
    """A line on stdout as it is: a path or URL in it is never read as markup (a
    "[draft]" in a folder's name is text) nor coloured."""
    console.print(line, markup=False, highlight=False)


def _print_json(value: Any) -> None:
    """value as JSON on stdout, whole, for a script (never wrapped, never coloured)."""
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _existing_story(store: StoryStore, story_id: str) -> LifeStory | CreativeStory:
    from storyloom.store.repository import StoryNotFoundError

    try:
        return store.get_story(story_id)
    except StoryNotFoundError:
        raise _fail(f"no story with id {story_id!r} (see `storyloom stories list`)") from None


def explain(error: ValidationError) -> list[str]:
    """One line per problem, each naming the field (`stages.adulthood: unknown stage`)."""
    lines = []
    for problem in error.errors(include_url=False):
        loc = [str(part) for part in problem["loc"] if part != "[key]"]
        # A story's kind is the union's tag: it is not a field the user wrote.
        if len(loc) > 1 and loc[0] in ("life", "creative"):
            loc = loc[1:]
        field = ".".join(loc) or "story"
        kind = problem["type"]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "json_invalid":
            detail = problem["msg"].removeprefix("Invalid JSON: ")
            field, message = "file", f"invalid JSON ({detail})"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            field, message = "kind", "must be 'life' or 'creative'"
        elif kind == "string_pattern_mismatch" and loc[-1:] == ["id"]:
            message = "must be 1 to 64 lowercase letters, digits and hyphens"
        elif kind == "literal_error" and ("language" in loc or "narration_languages" in loc):
            message = f"must be one of {', '.join(LANGUAGES)}"
        elif kind == "enum" and len(loc) >= 2 and loc[0] == "stages":
            message = f"unknown stage; the stages are {problem['ctx']['expected']}"
        else:
            message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message}")
    return lines


@stories_app.command("add")
def stories_add(
    file: Annotated[Path, typer.Argument(help="A story file (JSON).", show_default=False)],
    replace: Annotated[bool, typer.Option(help="Replace a story with the same id.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was saved as JSON.")] = False,
) -> None:
    """Validate a story file and save it."""
    from storyloom import services
    from storyloom.store.repository import StoryExistsError

    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise _fail(escape(f"cannot read {file}: {exc.strerror}"), BAD_INPUT) from None
    try:
        tale = parse_story(raw)
    except ValidationError as exc:
        for line in explain(exc):
            err.print(f"[red]error:[/red] {escape(line)}")
        err.print(f"{file}: refused, nothing was saved", markup=False, highlight=False)
        raise typer.Exit(BAD_INPUT) from None
    try:
        services.store().add_story(tale, replace=replace)
    except StoryExistsError:
        raise _fail(f"a story with id {tale.id!r} exists; add --replace to replace it") from None
    if as_json:
        _print_json(
            {"id": tale.id, "kind": tale.kind, "title": tale.title, "language": tale.language}
        )
        return
    console.print(f"saved story [bold]{tale.id}[/bold]: {escape(tale.title)}")


@stories_app.command("list")
def stories_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the saved stories."""
    from storyloom import services

    stories = services.store().list_stories()
    if as_json:
        _print_json([s.model_dump(mode="json") for s in stories])
        return
    table = Table("id", "kind", "title", "language", "pages", "last run", "updated")
    for s in stories:
        table.add_row(
            s.id, s.kind, escape(s.title), s.language, str(s.pages or "-"), s.status or "-",
            f"{s.updated_at:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    console.print(table)


@stories_app.command("show")
def stories_show(
    story_id: Annotated[str, typer.Argument(help="The story's id.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole book as JSON.")] = False,
) -> None:
    """Show a story's book: config, pages, illustrations, chapters."""
    from storyloom import services

    store = services.store()
    tale = _existing_story(store, story_id)
    book = store.book(story_id)
    latest = store.latest_generation(story_id)
    if as_json:
        payload: dict[str, Any] = (
            book.model_dump(mode="json") if book else {"story": tale.model_dump(mode="json")}
        )
        payload["latest_run"] = latest.model_dump(mode="json") if latest else None
        console.print_json(json.dumps(payload, ensure_ascii=False))
        return
    console.print(f"[bold]{tale.title}[/bold] ({tale.kind} story, {tale.language}, id {tale.id})")
    if latest is not None and latest.status in ("failed", "cancelled"):
        console.print(f"[yellow]last run {latest.status}:[/yellow] {escape(latest.error or '')}")
    if book is None:
        console.print("No book yet: run `storyloom generate " + story_id + "`.")
        return
    cfg = book.config
    console.print(
        f"config: {cfg.pages} pages x {cfg.words_per_page} words, tone {cfg.tone.value}, "
        f"audience {cfg.audience.value}, grammar pass {'on' if cfg.improve_grammar else 'off'}, "
        f"{cfg.illustrations} {cfg.image_style.value} images, "
        f"narration {', '.join(cfg.narration_languages or []) or 'none'}"
    )
    if book.banner_url:
        _say(f"banner: {book.banner_url}")
    pages = Table("page", "words", "text", title="Pages")
    for page in book.pages:
        preview = " ".join(page.text.split()[:14]) + " ..."
        pages.add_row(str(page.number), str(page.words), preview)
    console.print(pages)
    if book.illustrations:
        pics = Table("#", "page", "size", "url", title="Illustrations")
        for item in book.illustrations:
            mark = " (banner)" if item.is_banner else ""
            pics.add_row(
                f"{item.position}{mark}", str(item.page_number),
                f"{item.width}x{item.height}", escape(item.url),
            )  # fmt: skip
        console.print(pics)
    if book.usage:
        cost = Table("provider", "calls", "input tokens", "output tokens", "characters",
                     "reused (saved)", title="Cost of this book")  # fmt: skip
        for u in book.usage:
            cost.add_row(u.provider, str(u.calls), str(u.input_tokens), str(u.output_tokens),
                         str(u.characters), str(u.reused))  # fmt: skip
        console.print(cost)
    if book.writing is not None:
        _show_writing(book.writing)
    for language, chapters in book.chapters.items():
        table = Table(
            "#", "title", "from page", "seconds", "sentences", "url",
            title=f"Narration {language}",
        )  # fmt: skip
        for ch in chapters:
            table.add_row(
                str(ch.position), escape(ch.title), str(ch.first_page),
                f"{ch.duration_seconds:.1f}", str(len(ch.sentences)), escape(ch.url),
            )  # fmt: skip
        console.print(table)
    for language, why in book.narration_failures.items():
        console.print(f"[red]narration {language} failed[/red]: {escape(why)}")
        console.print(
            f"  narrate it again: prefect deployment run narration/generate "
            f"-p story_id={story_id} -p 'languages=[\"{language}\"]'"
        )
    for export in book.exports:
        suffix = f" ({export.language})" if export.language else ""
        _say(f"{export.format}{suffix}: {_where(export.url)}")


def _where(url: str) -> str:
    """A local file's path (what a person can open), or the URL."""
    if url.startswith("file://"):
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        return url2pathname(urlsplit(url).path)
    return url


@app.command("export")
def export(
    story_id: Annotated[str, typer.Argument(help="The story's id.", show_default=False)],
    formats: Annotated[
        list[str],
        typer.Option("--format", "-f", help="html, epub or pdf; repeat for several."),
    ] = ["html", "epub", "pdf"],  # noqa: B006 - typer reads the default, never mutates it
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The folder to write the files to.")
    ] = Path("."),
    language: Annotated[
        str | None,
        typer.Option("--language", "-l", help="Only this narration language (default: each)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the files written as JSON.")
    ] = False,
) -> None:
    """Write the story's book as files: a reader page that opens from disk (pictures and
    narration inside it), an EPUB 3 with read-along narration, a PDF for print."""
    from storyloom import services
    from storyloom.exports import BookSource, media_reader, render, store_reader

    known = ("html", "epub", "pdf")
    unknown = [f for f in formats if f not in known]
    if unknown:
        raise _fail(f"unknown format {', '.join(unknown)}: use {', '.join(known)}", BAD_INPUT)
    store = services.store()
    _existing_story(store, story_id)
    book = store.book(story_id)
    if book is None:
        raise _fail(f"story {story_id!r} has no book yet: run `storyloom generate {story_id}`")
    if language is not None and language not in book.chapters:
        have = ", ".join(book.chapters) or "none"
        raise _fail(f"the book has no narration in {language} (it has: {have})", BAD_INPUT)
    source = BookSource(book, media_reader(book, store_reader(services.media())))
    if language is not None:
        source = BookSource(
            book.model_copy(update={"chapters": {language: book.chapters[language]}}),
            source.read,
        )
    output.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, Any]] = []
    for file in render(source, cast("list[ExportFormat]", formats)):  # checked above
        path = output / file.file_name(story_id)
        path.write_bytes(file.data)
        written.append({"format": file.format, "language": file.language,
                        "path": str(path.absolute()), "bytes": len(file.data)})  # fmt: skip
        if not as_json:
            label = f"{file.format}{f' ({file.language})' if file.language else ''}"
            _say(f"{label}: {path}")
    if as_json:
        _print_json({"story": story_id, "files": written})


@stories_app.command("delete")
def stories_delete(
    story_id: Annotated[str, typer.Argument(help="The story's id.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete a story: its database rows and every media file it has."""
    from storyloom import services

    store = services.store()
    tale = _existing_story(store, story_id)
    if not yes and not typer.confirm(f"Delete {tale.title!r} and all its media?"):
        raise typer.Exit(1)
    # Media first: a failure there leaves the story in the database, to delete again.
    files = services.media().delete_story(story_id)
    store.delete_story(story_id)
    console.print(f"deleted story [bold]{story_id}[/bold] and {files} media files")


def _languages(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


@app.command()
def generate(
    story_id: Annotated[str, typer.Argument(help="The story's id.", show_default=False)],
    pages: Annotated[int | None, typer.Option(help="4, 8, 12, 16, 20 or 1-200.")] = None,
    words_per_page: Annotated[int | None, typer.Option(help="Words a page.")] = None,
    tone: Annotated[Tone | None, typer.Option(help="The tone of the text.")] = None,
    audience: Annotated[Audience | None, typer.Option(help="Who it is for.")] = None,
    grammar: Annotated[bool | None, typer.Option("--grammar/--no-grammar")] = None,
    images: Annotated[bool | None, typer.Option("--images/--no-images")] = None,
    style: Annotated[ImageStyle | None, typer.Option(help="Illustration style.")] = None,
    image_count: Annotated[int | None, typer.Option(help="Default: one a page.")] = None,
    languages: Annotated[
        str | None, typer.Option(help="Narration languages, e.g. hi-IN,en-IN ('' for none).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the generation (id, state, outputs) as JSON; progress: stderr."
        ),
    ] = False,
) -> None:
    """Generate a story's book here, showing progress."""
    given = {
        "pages": pages, "words_per_page": words_per_page, "tone": tone,
        "audience": audience, "improve_grammar": grammar, "images": images,
        "image_style": style, "image_count": image_count,
        "narration_languages": _languages(languages),
    }  # fmt: skip
    try:
        config = GenerationConfig.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        for line in explain(exc):
            err.print(f"[red]error:[/red] {line}")
        raise typer.Exit(BAD_INPUT) from None
    _generate(story_id, config, as_json=as_json)


def _generate(story_id: str, config: GenerationConfig, *, as_json: bool = False) -> None:
    from storyloom import services

    store = services.store()
    _existing_story(store, story_id)
    earlier = {g.id for g in store.generations(story_id)}
    _prepare_prefect()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from storyloom import jobs

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"), console=err if as_json else console,
    ) as bar:  # fmt: skip

        def show(event: Any) -> None:
            if event.flow not in bars:
                bars[event.flow] = bar.add_task(event.flow, total=event.total, note="")
            bar.update(bars[event.flow], completed=event.done, total=event.total, note=event.note)

        try:
            result = jobs.generate_here(story_id, config, on_progress=show)
        except Exception as exc:
            if as_json:
                latest = store.latest_generation(story_id)
                ours = latest if latest is not None and latest.id not in earlier else None
                _print_json({
                    "story": story_id, "generation_id": ours.id if ours else None,
                    "state": ours.status if ours else "failed", "error": str(exc),
                })  # fmt: skip
            raise _fail(escape(f"generation failed: {exc}")) from None
    if as_json:
        _print_json(_generation_view(story_id, result.generation_id))
        return
    _summary(story_id, result.generation_id)


def _generation_view(story_id: str, generation_id: str) -> dict[str, Any]:
    """What a finished generation made, for a script: its id, state and outputs."""
    from storyloom import services

    settings = get_settings()
    book = services.store().book(story_id)
    if book is None or book.generation_id != generation_id:
        raise _fail("the run finished but its book is not the current one")
    return {
        "story": story_id,
        "generation_id": book.generation_id,
        "state": book.status,
        "pages": len(book.pages),
        "words": sum(p.words for p in book.pages),
        "database": _safe_url(settings.database_url),
        "outputs": {
            "banner_url": book.banner_url,
            "illustrations": [
                {"position": i.position, "page": i.page_number, "url": i.url}
                for i in book.illustrations
            ],
            "chapters": {
                language: [
                    {
                        "position": c.position,
                        "title": c.title,
                        "url": c.url,
                        "seconds": c.duration_seconds,
                    }
                    for c in chapters
                ]
                for language, chapters in book.chapters.items()
            },
            "narration_failures": book.narration_failures,
            "exports": [
                {
                    "format": e.format,
                    "language": e.language,
                    "url": e.url,
                    "path": _where(e.url) if e.url.startswith("file://") else None,
                }
                for e in book.exports
            ],
        },
    }


def _show_writing(writing: WritingReport) -> None:
    """The outline with each section's length, the fact figures, and the flags."""
    precision = "n/a" if writing.precision is None else f"{writing.precision:.0%}"
    recall = "n/a" if writing.recall is None else f"{writing.recall:.0%}"
    console.print(
        f"writing: {writing.words} words for {writing.target_words} ({writing.gap:+.1%}); "
        f"facts: precision {precision}, recall {recall}"
    )
    if writing.length_note:
        console.print(f"[yellow]length missed:[/yellow] {writing.length_note}")
    outline = Table("section", "pages", "words", "target", "calls", "note", title="Outline")
    for s in writing.sections:
        last = s.first_page + s.pages - 1
        note = "; ".join(n for n in (s.length_miss, s.grammar_note) if n) or "ok"
        outline.add_row(
            s.heading, f"{s.first_page}-{last}" if last > s.first_page else str(last),
            str(s.words), str(s.target_words), str(s.calls), note,
        )  # fmt: skip
    console.print(outline)
    for flag in writing.flags:
        console.print(f"[yellow]for the teller's approval:[/yellow] {flag}")


def _summary(story_id: str, generation_id: str) -> None:
    from storyloom import services

    settings = get_settings()
    book = services.store().book(story_id)
    if book is None or book.generation_id != generation_id:
        raise _fail("the run finished but its book is not the current one")
    words = sum(p.words for p in book.pages)
    seconds = sum(c.duration_seconds for cs in book.chapters.values() for c in cs)
    chapters = sum(len(cs) for cs in book.chapters.values())
    console.print(
        f"\n[bold green]{book.story.title}[/bold green]: {len(book.pages)} pages, "
        f"{words} words, {len(book.illustrations)} images, {chapters} chapters, "
        f"{seconds:.1f} seconds of audio"
    )
    for language, items in book.chapters.items():
        console.print(f"  narration {language}: {len(items)} chapters, "
                      f"{sum(c.duration_seconds for c in items):.1f} s")  # fmt: skip
    for language, why in book.narration_failures.items():
        console.print(f"  [red]narration {language} failed[/red]: {escape(why)}")
    _say(f"  database: {_safe_url(settings.database_url)}")
    _say(f"  media:    {settings.media_dir.resolve() / 'stories' / story_id}")
    if book.banner_url:
        _say(f"  banner:   {book.banner_url}")
    for export in book.exports:
        label = {"html": "reader", "epub": "EPUB", "pdf": "PDF"}[export.format]
        suffix = f" ({export.language})" if export.language else ""
        _say(f"  {label}{suffix}: {_where(export.url)}")


@app.command()
def demo() -> None:
    """Add the sample life story and generate 8 pages, images and narration in two languages
    (upgrading the story database first: the demo is a first run's first command)."""
    from storyloom import services
    from storyloom.store.repository import StoryStore

    StoryStore.open(get_settings().database_url, migrate=True).close()
    tale = parse_story((SAMPLES / "life-story.json").read_bytes())
    services.store().add_story(tale, replace=True)
    console.print(f"added the sample story [bold]{tale.id}[/bold]: {tale.title}")
    config = GenerationConfig(pages=8, narration_languages=["en-IN", "hi-IN"])
    _generate(tale.id, config)
    console.print(f"  details:  storyloom stories show {tale.id}")
    console.print("\nOpen the Prefect UI on these runs: [bold]make ui[/bold]")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Say which provider serves each role and whether it answers.

    Real services get their cheapest call: Gemini and Cloudinary cost nothing, Sarvam
    a few characters (it has no free endpoint).
    """
    from dataclasses import asdict

    from storyloom.doctor import diagnose

    _prepare_prefect()  # the result storage row looks where runs write
    checks = [*diagnose(get_settings()), _result_storage_check()]
    ok = all(check.ok for check in checks)
    if as_json:
        _print_json({"ok": ok, "checks": [asdict(check) for check in checks]})
    else:
        table = Table("role", "provider", "kind", "answers", "detail")
        for check in checks:
            table.add_row(
                check.role, escape(check.provider), "real" if check.real else "offline",
                "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", escape(check.detail),
            )  # fmt: skip
        console.print(table)
    if not ok:
        raise typer.Exit(1)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def setup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would change.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every item and what changed as JSON.")
    ] = False,
) -> None:
    """Create (or bring up to date) the pools, limits, alert and deployments on the
    Prefect server named by PREFECT_API_URL. Running it twice changes nothing."""
    _prepare_prefect()
    from storyloom import jobs

    report = jobs.setup(dry_run=dry_run)
    if as_json:
        _print_json({
            **report.model_dump(mode="json"), "ok": report.ok,
            "changed": [item.model_dump(mode="json") for item in report.changed],
        })  # fmt: skip
    else:
        _say(report.render())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="The work pool: story, images or audio.")],
    limit: Annotated[int | None, typer.Option(help="Runs at a time in this worker.")] = None,
    name: Annotated[str | None, typer.Option(help="The worker's name.")] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Say whether this machine's workers of the pool are healthy"
                     " (exit 0) or not (exit 1), and exit: for a supervisor's health check."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --check: print JSON.")] = False,
) -> None:
    """Run a process worker for one pool; SIGTERM lets running work finish or hands it
    back to the pool. Exits 3 when the Prefect server is lost, 4 when a provider answers
    only account errors (see docs/production.md)."""
    if check:
        _check_workers(pool, name, as_json)
        return
    _prepare_prefect(quiet=False)  # a worker's console says what it picks up and when
    from storyloom import jobs
    from storyloom.store.repository import StoryStore

    # Every run it took would fail on a schema this code was not written for: say so now.
    StoryStore.open(get_settings().database_url).close()
    raise typer.Exit(jobs.work(pool, limit=limit, name=name))


def _check_workers(pool: str, name: str | None, as_json: bool) -> None:
    from storyloom.health import check_workers

    verdicts = check_workers(get_settings().home, pool, name=name)
    healthy = bool(verdicts) and all(verdict.healthy for verdict in verdicts)
    if as_json:
        console.print_json(json.dumps({
            "pool": pool, "healthy": healthy,
            "workers": [verdict.__dict__ for verdict in verdicts],
        }))  # fmt: skip
    else:
        if not verdicts:
            err.print(f"unhealthy: no worker of pool {pool!r} runs on this machine", markup=False)
        for verdict in verdicts:
            out = console if verdict.healthy else err
            word = "ok" if verdict.healthy else "unhealthy"
            out.print(f"{word}: worker {verdict.name}: {verdict.reason}", markup=False,
                      highlight=False)  # fmt: skip
    if not healthy:
        raise typer.Exit(1)


db_app = typer.Typer(
    no_args_is_help=True,
    help="The story database's schema: where it stands, and upgrading it (once per upgrade).",
)
app.add_typer(db_app, name="db")


def _unreachable(url: str, error: Exception) -> typer.Exit:
    # The driver's own words, first line (SQLAlchemy's add the SQL and a link).
    said = str(getattr(error, "orig", None) or error).strip().splitlines()
    reason = said[0] if said else type(error).__name__
    return _fail(escape(f"cannot use the database at {_safe_url(url)}: {reason}"))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the story database to the schema this storyloom needs. Run it once per
    upgrade, before new workers start (every other command refuses an older schema);
    running it again, or on several machines at once, is safe."""
    from sqlalchemy.exc import SQLAlchemyError

    from storyloom.store import migrator
    from storyloom.store.engine import reader
    from storyloom.store.repository import StoryStore

    url = get_settings().database_url
    console.print(f"database: {_safe_url(url)}", markup=False, highlight=False)
    try:
        with StoryStore(url) as store:
            before = store.migrate()
            after = migrator.current_revision(reader(store.engine))
    except SQLAlchemyError as exc:
        raise _unreachable(url, exc) from None
    console.print(f"before:   {before or 'none (no schema yet)'}", highlight=False)
    console.print(f"after:    {after}", highlight=False)


@db_app.command("status")
def db_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The schema revision the story database is at and the one this storyloom needs
    (head); changes nothing."""
    from sqlalchemy.exc import SQLAlchemyError

    from storyloom.store import migrator
    from storyloom.store.engine import create_store_engine, reader, sqlite_file
    from storyloom.store.schema import ADVICE, schema_state

    url = get_settings().database_url
    current: str | None = None
    path = sqlite_file(url)
    if path is None or path.exists():  # connecting would create a missing SQLite file
        engine = create_store_engine(url)
        try:
            current = migrator.current_revision(reader(engine))
        except SQLAlchemyError as exc:
            raise _unreachable(url, exc) from None
        finally:
            engine.dispose()
    head = migrator.head_revision()
    state = schema_state(current, head, migrator.known_revisions())
    if as_json:
        view = {"database": _safe_url(url), "current": current, "head": head, "state": state}
        console.print_json(json.dumps(view))
        return
    console.print(f"database: {_safe_url(url)}", markup=False, highlight=False)
    console.print(f"current:  {current or 'none (no schema yet)'}", highlight=False)
    console.print(f"head:     {head}", highlight=False)
    advice = f": {ADVICE[state]}" if state in ADVICE else ""
    console.print(f"state:    {state}{advice}", markup=False, highlight=False)


def _result_storage_check() -> Check:
    """Doctor's row for Prefect's result storage: where it is and what it holds."""
    from storyloom.doctor import Check
    from tasks.cache import UnsupportedStorage, footprint, human, result_folder

    try:
        folder = result_folder()
        files, size = footprint(folder)
    except UnsupportedStorage as exc:
        return Check("results", "storage block", True, True, f"not measured: {exc}")
    except OSError as exc:
        return Check("results", "local files", False, False, f"cannot read it: {exc}")
    detail = f"{folder}: {files} file{'' if files == 1 else 's'}, {human(size)}"
    return Check("results", "local files", False, True, f"{detail} (`storyloom cache usage`)")


cache_app = typer.Typer(
    no_args_is_help=True,
    help="Prefect's result storage: what it holds, and pruning what no kept book needs.",
)
app.add_typer(cache_app, name="cache")


@cache_app.command("usage")
def cache_usage(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Files and bytes of the result storage by kind: payloads (pictures and speech,
    expiring), kept (a book's pictures and chapters, by reference), paid (text answers),
    run results."""
    _prepare_prefect()
    from tasks.cache import UnsupportedStorage, human, survey

    try:
        found = survey()
    except UnsupportedStorage as exc:
        raise _fail(escape(str(exc))) from None
    if as_json:
        _print_json(found.as_json())
        return
    table = Table("kind", "files", "bytes", title=f"result storage: {escape(found.where)}")
    for kind, (files, size) in found.kinds.items():
        table.add_row(kind, str(files), human(size))
    table.add_row("all", str(found.files), human(found.size))
    console.print(table)


@cache_app.command("prune")
def cache_prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete the results no kept generation needs: expired payloads, kept pictures and
    chapters whose file no generation uses, old run results. Prints what went and the
    bytes freed."""
    _prepare_prefect()
    from tasks.cache import UnsupportedStorage, human, prune

    try:
        pruned = prune(dry_run=dry_run)
    except UnsupportedStorage as exc:
        raise _fail(escape(str(exc))) from None
    if as_json:
        _print_json(pruned.as_json())
        return
    verb = "would remove" if dry_run else "removed"
    for removal in pruned.removed:
        console.print(
            f"{verb} {removal.key}  {removal.kind}, {human(removal.size)}: {removal.why}",
            markup=False, highlight=False,
        )  # fmt: skip
    console.print(
        f"{pruned.where}: {verb} {len(pruned.removed)} files ({human(pruned.freed)});"
        f" {pruned.left.files} files ({human(pruned.left.size)}) left",
        markup=False, highlight=False,
    )  # fmt: skip


tenants_app = typer.Typer(no_args_is_help=True, help="Tenants of the HTTP API and their keys.")
app.add_typer(tenants_app, name="tenants")


@tenants_app.command("add")
def tenants_add(
    tenant_id: Annotated[str, typer.Argument(help="The tenant's id.", show_default=False)],
    name: Annotated[str | None, typer.Option(help="A name to show.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the tenant and its key (its only showing).")
    ] = False,
) -> None:
    """Add a tenant; its API key is printed once, on the last line (it is stored hashed:
    it cannot be shown again)."""
    from storyloom import services
    from storyloom.store.access import AccessError

    store = services.store()
    try:
        key = store.add_tenant(tenant_id, name)
    except AccessError as exc:
        raise _fail(escape(str(exc)), BAD_INPUT) from None
    if as_json:
        shown = dict(store.tenants()).get(tenant_id, name)
        _print_json({"id": tenant_id, "name": shown, "key": key})
        return
    err.print(f"tenant [bold]{tenant_id}[/bold] added; its API key (shown once):")
    print(key)


@tenants_app.command("list")
def tenants_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every tenant, one a line: its id, a tab, its name."""
    from storyloom import services

    tenants = services.store().tenants()
    if as_json:
        _print_json([{"id": tenant_id, "name": name} for tenant_id, name in tenants])
        return
    for tenant_id, name in tenants:
        print(f"{tenant_id}\t{name}")  # a real tab (rich would expand it): cut -f reads it


@tenants_app.command("key")
def tenants_key(
    tenant_id: Annotated[
        str | None, typer.Argument(help="The tenant; none with --admin.", show_default=False)
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key: every story.")] = False,
    revoke: Annotated[
        str | None, typer.Option(help="Revoke this key id (the part after sl_) instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make another API key for a tenant (or an admin key), printed once on the last line;
    or revoke one."""
    from storyloom import services
    from storyloom.store.access import AccessError

    store = services.store()
    if revoke is not None:
        if not store.revoke_key(revoke):
            raise _fail(escape(f"no live key {revoke!r}"), BAD_INPUT)
        if as_json:
            _print_json({"revoked": revoke})
        else:
            _say(f"key {revoke} revoked")
        return
    if admin == (tenant_id is not None):
        raise _fail("name a tenant, or --admin for an admin key", BAD_INPUT)
    try:
        key = store.add_key(tenant_id)
    except AccessError as exc:
        raise _fail(escape(str(exc)), BAD_INPUT) from None
    if as_json:
        _print_json({"tenant": tenant_id, "admin": admin, "key": key})
        return
    err.print("a new API key (shown once):")
    print(key)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port.")] = 8000,
) -> None:
    """Run the HTTP API (OpenAPI at /docs) against the story database and media store
    this environment names."""
    import uvicorn

    from storyloom import services

    services.store()  # fails here, with the reason, if the database cannot be opened
    err.print(f"storyloom API on http://{host}:{port} (OpenAPI: http://{host}:{port}/docs)")
    uvicorn.run("storyloom.api:create_app", factory=True, host=host, port=port,
                log_level="warning", access_log=False)  # fmt: skip


jobs_app = typer.Typer(
    no_args_is_help=True,
    help="Jobs on a Prefect server (PREFECT_API_URL): the same core as the HTTP API.",
)
app.add_typer(jobs_app, name="jobs")


def _job_view(job_id: str) -> dict[str, Any]:
    from storyloom import jobs

    found = jobs.status(job_id)
    if found is None:
        raise _fail(f"no job {job_id}")
    run = found.run
    return {
        "id": run.id, "kind": run.name, "state": run.state, "state_name": run.state_name,
        "progress": found.progress, "step": found.step,
        "children": [{"id": c.id, "kind": c.name, "state": c.state} for c in found.children],
        "created_at": run.created, "started_at": run.started, "finished_at": run.finished,
        "error": run.error,
    }  # fmt: skip


def _follow(job_id: str) -> dict[str, Any]:
    """Show the job's progress as a bar until it ends; its last view."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn

    from storyloom import jobs

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[step]}"), console=err, transient=False,
    ) as bar:  # fmt: skip
        task = bar.add_task("starting", total=1.0, step="")
        while True:
            view = _job_view(job_id)
            bar.update(
                task, completed=view["progress"] or 0.0, description=view["state_name"],
                step=view["step"] or "",
            )  # fmt: skip
            if view["state"] in jobs.FINAL_STATES:
                return view
            time.sleep(1.0)


def _print_job(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(view, default=str))
        return
    line = f"{view['id']}  {view['kind']}  {view['state_name']}"
    if view["progress"] is not None:
        line += f"  {view['progress']:.0%}"
    console.print(line + (f"  {view['step']}" if view["step"] else ""))
    for child in view["children"]:
        console.print(f"  child {child['id']}  {child['kind']}  {child['state']}")
    if view["error"]:
        _say(f"  error: {view['error']}")


@jobs_app.command("submit")
def jobs_submit(
    story_id: Annotated[str, typer.Argument(help="The story's id.", show_default=False)],
    kind: Annotated[str, typer.Option(help="story, illustrations or narration.")] = "story",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="An option as KEY=VALUE (JSON values); repeat."),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="The same key: the same job.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to the end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Submit a job to the server's deployments; its id is printed (last line)."""
    from storyloom import jobs, services

    if kind not in jobs.JOB_KINDS:
        raise _fail(f"unknown kind {kind!r}: use {', '.join(jobs.JOB_KINDS)}", BAD_INPUT)
    options: dict[str, Any] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise _fail(f"--param {item!r}: write KEY=VALUE", BAD_INPUT)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    try:
        parameters = jobs.job_parameters(kind, options)
    except ValidationError as exc:
        for line in explain(exc):
            err.print(line)
        raise typer.Exit(BAD_INPUT) from None
    _existing_story(services.store(), story_id)
    job_id = jobs.submit(kind, story_id, parameters, idempotency_key=idempotency_key)
    if not wait:
        if as_json:
            console.print_json(json.dumps({"id": job_id}))
        else:
            print(job_id)
        return
    view = _follow(job_id)
    _print_job(view, as_json)
    if view["state"] != "completed":
        raise typer.Exit(1)


@jobs_app.command("status")
def jobs_status(
    job_id: Annotated[str, typer.Argument(help="The job's id.", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", help="Follow it to the end.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A job's state, progress, step, children and error."""
    view = _follow(job_id) if follow else _job_view(job_id)
    _print_job(view, as_json)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.", show_default=False)],
) -> None:
    """Cancel a job and its children (a finished job: exit 1)."""
    from storyloom import jobs

    before = jobs.cancel(job_id)
    if before is None:
        raise _fail(f"no job {job_id}")
    if before.final:
        raise _fail(f"job {job_id} has finished: it is {before.state}")
    console.print(f"job {job_id} cancelled (it was {before.state})")


@jobs_app.command("list")
def jobs_list(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    story: Annotated[str | None, typer.Option(help="Only this story's.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recent runs of the job deployments, newest first."""
    from storyloom import jobs

    runs = jobs.recent(kind=kind, story_id=story, limit=limit)  # type: ignore[arg-type]
    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in runs], default=str))
        return
    for run in runs:
        console.print(f"{run.id}  {run.name:<13} {run.state_name:<10} {run.created}")


@jobs_app.command("stats")
def jobs_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per kind: jobs by state, the pool's limit and what runs now; the API limits."""
    from storyloom import jobs

    stats = jobs.stats()
    if as_json:
        console.print_json(json.dumps(stats, default=str))
        return
    table = Table("kind", "pool", "limit", "running", "by state", title="Jobs")
    for kind, row in stats["kinds"].items():
        states = ", ".join(f"{k} {v}" for k, v in sorted(row["states"].items()))
        table.add_row(kind, row["pool"], str(row["pool_limit"]), str(row["running"]), states)
    console.print(table)
    limits = Table("API limit", "in use", "limit", title="API limits")
    for name, row in sorted(stats["api_limits"].items()):
        limits.add_row(name, str(row["in_use"]), str(row["limit"]))
    console.print(limits)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="The address the HTTP API listens on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="The HTTP API's port (0: any free one).", min=0, max=65535)
    ] = 8000,
    prefect_port: Annotated[
        int,
        typer.Option(help="The Prefect server's port on 127.0.0.1 (0: any free one).",
                     min=0, max=65535),
    ] = 4200,
) -> None:
    """Run everything an application needs on this machine: a Prefect server (SQLite
    under the home), `storyloom setup`, one worker per pool and the HTTP API. Ctrl-C or
    SIGTERM stops them all; their logs are in the home's logs folder."""
    from storyloom.serve import ServeError, ServeOptions, run

    try:
        code = run(
            ServeOptions(host, port, prefect_port),
            say=lambda line: err.print(line, markup=False, highlight=False),
            show=lambda line: console.print(line, markup=False, highlight=False),
        )
    except ServeError as exc:
        raise _fail(escape(str(exc))) from None
    raise typer.Exit(code)
