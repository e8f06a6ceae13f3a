"""The pipeline benchmark's one table, printed and written to docs/performance.md."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.bounds import Limit

# The tuning log (each change, and what it bought in figures from runs of this benchmark
# before and after it): kept by hand, appended to the page as it is.
TUNING_LOG = Path(__file__).with_name("tuning-log.md")

GOAL_ONE = 1.25  # one story within this of its critical path
GOAL_BATCH = 1.10  # a batch within this of its bound
GOAL_LATENCY = 2.0  # median seconds from submit to Running


@dataclass
class Figures:
    stories: int
    command: str  # how this run was started
    latency: dict[str, float]
    limits: dict[str, Limit]
    pools: dict[str, int]
    one_wall: float
    one_cp: float
    one_cp_images: float
    one_cp_audio: float
    one_busy: float  # seconds with a call in flight
    one_latency: tuple[float, float]
    batch_wall: float
    bounds: dict[str, float]
    busiest: str
    batch_busy: float  # share
    batch_idle: float  # seconds with no call in flight
    batch_latency: tuple[float, float]
    batch_latency_by_flow: dict[str, tuple[float, float]]
    one_paid: Counter[str]
    one_minimum: Counter[str]
    one_repeated: int
    batch_paid: Counter[str]
    batch_repeated: int
    all_repeated: int
    rerun_paid: Counter[str]
    rerun_wall: float
    edit_paid: Counter[str]
    edit_wall: float
    peaks: dict[str, float]
    failed: list[str]
    machine: dict[str, str]
    setup_seconds: float
    bench_seconds: float
    when: str
    stages: dict[str, int]


Row = tuple[str, str, str, str]  # figure, measured, goal, met


def _kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def rows(f: Figures) -> list[Row]:
    one_ratio = f.one_wall / f.one_cp if f.one_cp else float("inf")
    bound = f.bounds[f.busiest]
    batch_ratio = f.batch_wall / bound if bound else float("inf")
    paid_one = sum(f.one_paid.values())
    needed = sum(f.one_minimum.values())
    others = ", ".join(
        f"{name} {seconds:.0f} s"
        for name, seconds in sorted(f.bounds.items(), key=lambda kv: -kv[1])
        if name != f.busiest
    )
    by_flow = ", ".join(
        f"{name} {median:.1f}/{worst:.1f} s"
        for name, (median, worst) in f.batch_latency_by_flow.items()
    )
    found: list[Row] = [
        ("one story: submit to complete", f"{f.one_wall:.1f} s", "", ""),
        (
            "one story: critical path",
            f"{f.one_cp:.1f} s",
            f"illustrations {f.one_cp_images:.1f} s, narration {f.one_cp_audio:.1f} s",
            "",
        ),
        ("one story: wall / critical path", f"{one_ratio:.2f}", f"<= {GOAL_ONE}",
         _verdict(one_ratio <= GOAL_ONE)),
        (f"batch of {f.stories}: submit to last complete", f"{f.batch_wall:.1f} s",
         f"{f.batch_wall / f.stories:.1f} s a story", ""),
        (f"batch: bound ({f.busiest})", f"{bound:.1f} s", f"next: {others}", ""),
        ("batch: wall / bound", f"{batch_ratio:.2f}", f"<= {GOAL_BATCH}",
         _verdict(batch_ratio <= GOAL_BATCH)),
        ("provider busy time, batch", f"{f.batch_busy:.0%} of wall", "", ""),
        ("provider busy time, one story",
         f"{f.one_busy / f.one_wall:.0%} of wall" if f.one_wall else "-", "", ""),
        ("scheduling latency, one story (median / worst)",
         f"{f.one_latency[0]:.1f} / {f.one_latency[1]:.1f} s", "", ""),
        ("scheduling latency, batch (median / worst)",
         f"{f.batch_latency[0]:.1f} / {f.batch_latency[1]:.1f} s",
         f"median < {GOAL_LATENCY:.0f} s", _verdict(f.batch_latency[0] < GOAL_LATENCY)),
        ("scheduling latency, batch, per flow", by_flow, "", ""),
        ("Prefect's overhead, one story: outside provider calls",
         f"{f.one_wall - f.one_busy:.1f} s", "", ""),
        ("Prefect's overhead, one story: wall - critical path",
         f"{f.one_wall - f.one_cp:.1f} s", "", ""),
        ("Prefect's overhead, batch: no call in flight, per story",
         f"{f.batch_idle / f.stories:.1f} s", f"{f.batch_idle:.0f} s in all", ""),
        ("cost: paid calls, one story", f"{paid_one}", f"minimum {needed}",
         _verdict(paid_one <= needed)),
        ("cost: one story by kind", _kinds(f.one_paid), f"minimum: {_kinds(f.one_minimum)}", ""),
        ("cost: paid calls per story, batch",
         f"{sum(f.batch_paid.values()) / f.stories:.1f}", f"minimum {needed}",
         _verdict(sum(f.batch_paid.values()) <= needed * f.stories)),
        ("cost: rerun of a completed story", f"{sum(f.rerun_paid.values())} paid calls",
         "0", _verdict(not f.rerun_paid)),
        ("cost: after editing one stage", f"{sum(f.edit_paid.values())} paid calls",
         _kinds(f.edit_paid), ""),
        ("cost: repeated paid calls, all runs", f"{f.all_repeated}", "0",
         _verdict(f.all_repeated == 0)),
    ]  # fmt: skip
    memory = "memory: peak RSS per worker tree, batch"
    return found + _memory_and_failures(memory, f.peaks, f.failed)


def _memory_and_failures(label: str, peaks: dict[str, float], failed: list[str]) -> list[Row]:
    """The table's last rows: each worker tree's peak memory, then any run that failed."""
    found: list[Row] = [
        (label, ", ".join(f"{key} {mib:.0f} MiB" for key, mib in peaks.items()), "", "")
    ]
    if failed:
        found.append(("runs that did not complete", "; ".join(failed), "none", "missed"))
    return found


def _print_table(title: str, found: list[Row], footer: str) -> None:
    table = Table(title=title)
    for name in ("figure", "measured", "goal / detail", ""):
        table.add_column(name, overflow="fold")
    for row in found:
        table.add_row(*row)
    console = Console(width=160)
    console.print(table)
    console.print(footer)


def render_table(f: Figures) -> None:
    _print_table(
        f"storyloom pipeline benchmark ({f.when}, {f.machine['cores']} cores)",
        rows(f),
        f"cluster start and setup {f.setup_seconds:.0f} s; the benchmark took "
        f"{f.bench_seconds:.0f} s in all; rerun {f.rerun_wall:.1f} s, edit {f.edit_wall:.1f} s",
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(found: list[Row]) -> list[str]:
    table = ["| figure | measured | goal / detail | |", "|---|---|---|---|"]
    return table + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in found]


def render_markdown(f: Figures) -> str:
    table = _markdown_table(rows(f))
    limits = ", ".join(
        f"{api} {lim.in_flight} in flight and {lim.per_second:g}/s" for api, lim in f.limits.items()
    )
    pools = ", ".join(f"{pool} {n}" for pool, n in f.pools.items())
    latency = ", ".join(f"{kind} {s:g} s" for kind, s in f.latency.items())
    stages = ", ".join(f"{name} {n}" for name, n in f.stages.items())
    m = f.machine
    per_story = max(f.batch_wall / max(f.stories, 1), 1.0)
    return TEMPLATE.format(
        when=f.when,
        run=f"`{f.command}`",
        stories=f.stories,
        cores=m["cores"],
        cpu=m["cpu"],
        ram=m["ram"],
        os=m["os"],
        python=m["python"],
        prefect=m["prefect"],
        table="\n".join(table),
        setup=f"{f.setup_seconds:.0f}",
        total=f"{f.bench_seconds:.0f}",
        rerun=f"{f.rerun_wall:.1f}",
        edit=f"{f.edit_wall:.1f}",
        limits=limits,
        pools=pools,
        latency=latency,
        stages=stages,
        per_story=f"{per_story:.0f}",
        fit=max(1, int((15 * 60 - (f.bench_seconds - f.batch_wall)) // per_story)),
        fifty=f"{(f.bench_seconds - f.batch_wall + 50 * per_story) / 60:.0f}",
    ) + "\n" + TUNING_LOG.read_text(encoding="utf-8")


TEMPLATE = """\
# Performance: how close to its limits the pipeline runs, and what it costs

Written by `make bench-pipeline` (bench/pipeline.py); every figure below comes from
its last run, never typed in. Run it again to refresh this page.

## Last run

{when}, {run}: one story, the same story again, the story after an edit of one
stage, then a batch of {stories} stories submitted at once.

Machine: {cores} cores ({cpu}), {ram} RAM, {os}; Python {python}, Prefect {prefect}.

{table}

Starting the cluster and `storyloom setup` took {setup} s; the whole benchmark {total} s.
The rerun took {rerun} s, the run after the edit {edit} s. At this run's pace
({per_story} s a story in the batch) a batch of {fit} fits in the 15 minutes the issue
allows beside the rest (`--stories N` sets the batch; the issue's 50 would take
about {fifty} minutes).

## What runs

The production topology on one machine (tests/system/cluster.py): a Prefect server on
PostgreSQL, `storyloom setup`, one `storyloom worker` per pool ({pools}), the story
database on PostgreSQL, the real provider clients (google-genai, Sarvam over httpx,
Cloudinary) against the loopback fakes, which run in the benchmark's own process and
log every call with its start and end. Each fake answers after a fixed latency per kind
of call: {latency} (a translation counts as text; reading or deleting a file on
Cloudinary takes the upload's latency). The per-API limits are the defaults: {limits}.
Each story is the 8-page sample life story under its own id, with images on every
page and narration in en-IN (its language) and hi-IN (translated page by page first).

## Method

- **Wall time** is read from Prefect: from the story run's first state (Scheduled, as
  it is created) to the end of its last run, on the server's clock; the provider calls'
  times are turned onto the same clock.
- **Critical path** (bench/bounds.py, bench/calls.py): the finish time of an ideal
  scheduler that adds nothing on top of the provider calls. It takes the story's own
  recorded calls with their measured durations, in the order the flows must make them,
  and starts each one at the first moment its API has a slot in flight free and a token
  of its rate (a bucket as deep as its slots, full at the start). The order: the
  writing rounds one after another (the first section alone, then the other sections;
  calls of one kind in a row are one round: the flow waits for a whole round), then two
  branches side by side: illustrations (image plans, the first alone; the first image;
  its upload; the other images; their uploads) and narration (language after language:
  translations, the first alone; the first chapter's speech; the other chapters'
  speech; their uploads); then the book files' uploads. Each branch sees the limits as
  if alone, so this is a lower bound. Stages of the last one-story run: {stages}.
- **Batch bound**: the busiest limited resource. Per API, the larger of its total call
  time over its slots in flight and its calls at its rate (the first `in_flight` at
  once, then one every 1/rate, plus the last call's own time), from the batch's
  recorded calls. Per pool, its runs times the least time each run holds a slot, over
  its slots: a story run holds its `story` slot for its whole critical path (it waits
  for its children), an illustrations run for the illustrations branch, a narration run
  for the narration branch (both from the one story's calls).
- **Provider busy time**: the share of the batch's wall time with at least one provider
  call in flight (the union of the calls' spans).
- **Scheduling latency**: per deployment run (every story, illustrations and narration
  run), from its first state (Scheduled, when it was created) to its first Running
  state, from the run's state history. In a batch it includes the wait for a pool slot.
- **Prefect's overhead**: for the one story, the wall time outside provider calls, and
  the wall time over the critical path; for the batch, the wall time with no provider
  call in flight, divided by the stories.
- **Cost**: paid calls (text, image plans, images, translations, speech, uploads; not
  reading or deleting a file) counted on the fakes. The minimum is derived from the one
  story's own calls: each distinct request once (every section written once and
  proofread once, a plan and an image per illustrated page, a translation per piece of
  text, a speech request per chunk, an upload per file), no revision or continuation
  (the fakes answer at the length asked). A repeated call is a paid request identical
  to one already answered (an upload: the same public id). The rerun submits the
  completed story again with the same parameters; the edit changes one word in a memory
  inside one stage (not at its edges) and submits it again.
- **Memory**: the resident memory (VmRSS, /proc) of each worker and every process under
  it (its flow runs), summed per worker and sampled every 0.5 s through the batch; the
  peak.

"""


# --- The scale run (`--scale W`): a section of its own, kept when the page is rewritten --

CHILD_POOLS = ("images", "audio")  # a run holds its pool's slot from start to end
SCALE_BEGIN = "<!-- scale run: written by bench/pipeline.py --scale -->"
SCALE_END = "<!-- end of scale run -->"


@dataclass
class ScaleFigures:
    stories: int
    workers: int  # per pool
    command: str
    when: str
    machine: dict[str, str]
    batch_wall: float
    bounds: dict[str, float]
    busiest: str
    batch_busy: float  # share
    batch_latency: tuple[float, float]
    paid_per_story: float
    minimum: int  # paid calls one story needs
    repeated: int
    peaks: dict[str, float]  # per worker (its key: "story", "story-2", ...)
    failed: list[str]
    bench_seconds: float
    pool_peaks: dict[str, int]  # the most runs of each pool Running at one moment
    pool_limits: dict[str, int]


def scale_rows(f: ScaleFigures) -> list[Row]:
    bound = f.bounds[f.busiest]
    ratio = f.batch_wall / bound if bound else float("inf")
    found: list[Row] = [
        (f"batch of {f.stories}: submit to last complete", f"{f.batch_wall:.1f} s",
         f"{f.batch_wall / f.stories:.1f} s a story", ""),
        (f"batch: bound ({f.busiest})", f"{bound:.1f} s", "", ""),
        ("batch: wall / bound", f"{ratio:.2f}", f"<= {GOAL_BATCH}", _verdict(ratio <= GOAL_BATCH)),
        ("provider busy time, batch", f"{f.batch_busy:.0%} of wall", "", ""),
        ("scheduling latency, batch (median / worst)",
         f"{f.batch_latency[0]:.1f} / {f.batch_latency[1]:.1f} s",
         f"median < {GOAL_LATENCY:.0f} s", _verdict(f.batch_latency[0] < GOAL_LATENCY)),
        ("cost: paid calls per story", f"{f.paid_per_story:.1f}", f"minimum {f.minimum}",
         _verdict(f.paid_per_story <= f.minimum)),
        ("cost: repeated paid calls", f"{f.repeated}", "0", _verdict(f.repeated == 0)),
        ("pools: most runs Running at once (limit)",
         ", ".join(f"{pool} {n} ({f.pool_limits[pool]})" for pool, n in f.pool_peaks.items()),
         "images, audio <= their limits (a story run that waited for its children resumes"
         " outside its pool's limit)",
         _verdict(all(f.pool_peaks[pool] <= f.pool_limits[pool] for pool in CHILD_POOLS))),
    ]  # fmt: skip
    return found + _memory_and_failures("memory: peak RSS per worker tree", f.peaks, f.failed)


def render_scale_table(f: ScaleFigures) -> None:
    _print_table(
        f"storyloom scale run ({f.when}, {f.workers} workers per pool, "
        f"PostgreSQL and Redis, {f.machine['cores']} cores)",
        scale_rows(f),
        f"the scale run took {f.bench_seconds:.0f} s in all",
    )


def render_scale(f: ScaleFigures) -> str:
    """The scale run's section of docs/performance.md, between its markers."""
    table = _markdown_table(scale_rows(f))
    m = f.machine
    return "\n".join([
        SCALE_BEGIN,
        "## Scale: more workers per pool, on PostgreSQL and Redis",
        "",
        f"{f.when}, `{f.command}`: a batch of {f.stories} stories submitted at once to "
        f"{f.workers} workers per pool, the Prefect server's messaging, causal ordering, "
        "concurrency leases and background tasks on Redis and the task-cache lock on Redis "
        "(docs/production.md), the Prefect and story databases on PostgreSQL; the pools' "
        "limits and the per-API limits as above. The bound is computed as for the batch "
        "above (the one story run first gives the pools' shares). Machine: "
        f"{m['cores']} cores ({m['cpu']}), {m['ram']} RAM. The whole run took "
        f"{f.bench_seconds:.0f} s.",
        "",
        *table,
        "",
        SCALE_END,
    ])  # fmt: skip


def scale_section(page: str) -> str | None:
    """The scale run's section of a page, markers included, if it has one."""
    begin, end = page.find(SCALE_BEGIN), page.find(SCALE_END)
    if begin < 0 or end < begin:
        return None
    return page[begin : end + len(SCALE_END)]


def with_scale_section(page: str, section: str | None) -> str:
    """The page with its scale section replaced by `section` (or put before the tuning
    log); the page as it is when there is none."""
    if section is None:
        return page
    old = scale_section(page)
    if old is not None:
        return page.replace(old, section)
    at = page.find("\n## Tuning log")
    if at < 0:
        return page.rstrip("\n") + "\n\n" + section + "\n"
    return page[: at + 1] + section + "\n\n" + page[at + 1 :]
