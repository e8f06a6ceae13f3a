"""docs/performance.md keeps the scale run's section when the main run rewrites it, and
a scale run replaces only its own section."""

from __future__ import annotations

from bench.performance import SCALE_BEGIN, SCALE_END, scale_section, with_scale_section

PAGE = "# Performance\n\n## Last run\n\ntable\n\n## Tuning log\n\n### 1. a change\n"


def section(text: str) -> str:
    return f"{SCALE_BEGIN}\n## Scale\n\n{text}\n{SCALE_END}"


def test_a_first_scale_section_goes_before_the_tuning_log() -> None:
    page = with_scale_section(PAGE, section("50 stories"))
    assert page.index("## Last run") < page.index("50 stories") < page.index("## Tuning log")
    assert page.endswith("### 1. a change\n")
    assert scale_section(page) == section("50 stories")


def test_a_new_scale_run_replaces_the_old_section_only() -> None:
    page = with_scale_section(PAGE, section("50 stories"))
    again = with_scale_section(page, section("200 stories"))
    assert "50 stories" not in again
    assert scale_section(again) == section("200 stories")
    assert again.replace(section("200 stories"), "") == page.replace(section("50 stories"), "")


def test_the_main_run_keeps_the_section_a_scale_run_wrote() -> None:
    old = with_scale_section(PAGE, section("50 stories"))
    rewritten = PAGE.replace("table", "a new table")
    page = with_scale_section(rewritten, scale_section(old))
    assert "a new table" in page
    assert scale_section(page) == section("50 stories")
    assert with_scale_section(rewritten, scale_section(rewritten)) == rewritten  # none yet


def test_a_page_without_a_tuning_log_gets_the_section_at_its_end() -> None:
    page = with_scale_section("# Performance\n", section("4 stories"))
    assert page.startswith("# Performance\n\n" + SCALE_BEGIN)
    assert page.endswith(SCALE_END + "\n")


def test_pool_peaks_count_runs_running_at_once_per_pool() -> None:
    from uuid import uuid4

    from bench.pipeline import Run, pool_peaks

    def run(pool: str, running: float | None, end: float | None) -> Run:
        return Run(uuid4(), "narration", pool, "COMPLETED", 0.0, running, end)

    runs = [
        run("audio", 10, 50), run("audio", 20, 60), run("audio", 40, 45),  # 3 at 40-45
        run("audio", 60, 70),  # starts as one ends: not at once
        run("images", 0, 10), run("images", 10, 20),
        run("story", None, None),  # never ran
    ]  # fmt: skip
    assert pool_peaks(runs) == {"story": 0, "images": 1, "audio": 3}
