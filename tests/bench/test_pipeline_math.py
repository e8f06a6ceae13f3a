"""The pure parts of the pipeline benchmark: critical path, bounds, busy share."""

from __future__ import annotations

import pytest

from bench.bounds import (
    Limit,
    Parallel,
    Serial,
    Stage,
    api_bound,
    busy_share,
    critical_path,
    pool_bound,
)
from bench.calls import ProviderCall, repeated, story_plan
from storyloom.limits import CLOUDINARY, GEMINI_IMAGE, GEMINI_TEXT, SARVAM

FREE = Limit(100, 100.0)  # limits that never bind


def test_stages_in_series_add_up() -> None:
    plan = Serial((Stage("t", (1.0, 1.0, 1.0)), Stage("t", (2.0,))))
    assert critical_path(plan, {"t": FREE}) == pytest.approx(3.0)


def test_slots_in_flight_serialise_a_stage() -> None:
    # Two slots, three one-second calls: two at once, then the third.
    assert critical_path(Stage("t", (1.0, 1.0, 1.0)), {"t": Limit(2, 100.0)}) == pytest.approx(2.0)


def test_the_rate_spaces_calls_after_the_bucket_is_spent() -> None:
    # Two slots and 0.2 a second, a bucket of two: calls start at 0, 0, 5 (a slot frees
    # at 2 but the bucket holds 0.4 then) and 10; the last ends at 12.
    assert critical_path(Stage("i", (2.0,) * 4), {"i": Limit(2, 0.2)}) == pytest.approx(12.0)


def test_the_bucket_refills_between_stages() -> None:
    # One token a second, one deep: the second call waits for its token, the third
    # comes after a 3 s call on another API and finds the bucket full again.
    plan = Serial((Stage("t", (0.5,)), Stage("t", (0.5,)), Stage("x", (3.0,)), Stage("t", (0.5,))))
    assert critical_path(plan, {"t": Limit(1, 1.0), "x": FREE}) == pytest.approx(5.0)


def test_branches_side_by_side_take_the_longest() -> None:
    plan = Serial(
        (
            Stage("a", (1.0,)),
            Parallel((Stage("b", (3.0,)), Serial((Stage("c", (1.0,)), Stage("c", (1.0,)))))),
            Stage("a", (1.0,)),
        )
    )
    assert critical_path(plan, {"a": FREE, "b": FREE, "c": FREE}) == pytest.approx(5.0)


def _call(api: str, kind: str, start: float, seconds: float, **extra: str) -> ProviderCall:
    return ProviderCall(
        api=api, kind=kind, language=extra.get("language", ""), media=extra.get("media", ""),
        request=extra.get("request", f"{kind}-{start}"), start=start, end=start + seconds,
        status=200,
    )  # fmt: skip


def test_a_story_plan_from_its_calls() -> None:
    calls = [
        _call(GEMINI_TEXT, "section", 0, 1.0),
        _call(GEMINI_TEXT, "section", 1, 1.0),
        _call(GEMINI_TEXT, "section", 1, 1.0),
        _call(GEMINI_TEXT, "proofread", 2, 1.0),
        _call(GEMINI_TEXT, "proofread", 2, 1.0),
        _call(GEMINI_TEXT, "plan", 3, 1.0),
        _call(GEMINI_IMAGE, "image", 4, 2.0),
        _call(CLOUDINARY, "upload", 6, 0.2, media="image"),
        _call(GEMINI_IMAGE, "image", 7, 2.0),
        _call(CLOUDINARY, "upload", 9, 0.2, media="image"),
        _call(SARVAM, "speech", 3, 0.5, language="en-IN"),
        _call(SARVAM, "speech", 4, 0.5, language="en-IN"),
        _call(CLOUDINARY, "upload", 5, 0.2, media="audio", language="en-IN"),
        _call(CLOUDINARY, "upload", 10, 0.2, media="file"),
    ]
    apis = {GEMINI_TEXT: FREE, GEMINI_IMAGE: FREE, SARVAM: FREE, CLOUDINARY: FREE}
    # Writing 3 s (first section, the other, proofreads); illustrations 5.4 s (plan,
    # first image, its upload, the other image, its upload) beside narration 1.2 s;
    # then the book file 0.2 s.
    assert critical_path(story_plan(calls), apis) == pytest.approx(8.6)
    # Images at 0.2 a second, one in flight: the second image waits 5 s for its token.
    slow = apis | {GEMINI_IMAGE: Limit(1, 0.2)}
    assert critical_path(story_plan(calls), slow) == pytest.approx(8.6 + 5.0 - 2.2)


def test_repeated_calls_are_the_same_request_answered_before() -> None:
    calls = [
        _call(SARVAM, "speech", 0, 0.5, request="a"),
        _call(SARVAM, "speech", 1, 0.5, request="b"),
        _call(SARVAM, "speech", 2, 0.5, request="a"),
        _call(CLOUDINARY, "media-other", 3, 0.2, request="a"),  # not paid
    ]
    assert repeated(calls) == 1


def test_the_bound_of_an_api_is_its_slots_or_its_rate() -> None:
    ten = [1.0] * 10
    assert api_bound(ten, Limit(2, 100.0)) == pytest.approx(5.0)  # 10 s of calls, 2 slots
    assert api_bound(ten, Limit(2, 0.5)) == pytest.approx(17.0)  # 8 after the burst, 2 s apart
    assert api_bound([], Limit(2, 0.5)) == 0.0
    assert pool_bound(runs=10, seconds_each=30.0, slots=2) == pytest.approx(150.0)


def test_busy_share_is_the_union_of_calls_in_flight() -> None:
    assert busy_share([(0, 2), (1, 3), (5, 6)], 0, 10) == pytest.approx(0.4)
    assert busy_share([(-1, 1), (3, 9)], 0, 4) == pytest.approx(0.5)  # clipped to the window
    assert busy_share([], 0, 4) == 0.0


def test_writing_rounds_follow_the_barriers_between_kinds() -> None:
    # The first section alone; the others spaced by the rate (no overlap, one kind: one
    # round); a round mixing a revision and a proofread; then a proofread.
    calls = [
        _call(GEMINI_TEXT, "section", 0, 1.0),
        _call(GEMINI_TEXT, "section", 1, 1.0),
        _call(GEMINI_TEXT, "section", 2, 1.0),
        _call(GEMINI_TEXT, "revise", 3, 1.0),
        _call(GEMINI_TEXT, "proofread", 3.5, 1.0),
        _call(GEMINI_TEXT, "proofread", 5, 1.0),
    ]
    rounds = story_plan(calls).steps[:-1]
    assert [len(r.durations) for r in rounds if isinstance(r, Stage)] == [1, 2, 2, 1]
    assert critical_path(story_plan(calls), {GEMINI_TEXT: FREE}) == pytest.approx(4.0)
