"""
Tests for L{tcbridge.feed.patch} and L{tcbridge.feed.state}: a builder
laid over a kept state, less the old versions of what changed, builds the
bytes and figures of a builder given the new data from the start; a state
that does not hold what is to be taken out is refused, never half-used.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcbridge.feed import state as state_module
from tcbridge.feed.builder import FeedBuilder, FeedSettings
from tcbridge.feed.filters import Exclusions
from tcbridge.feed.job import WAIT, BuildJob, read_outcome, run_job, write_job
from tcbridge.feed.job import main as job_main
from tcbridge.feed.patch import PatchError, settings_patchable
from tcbridge.feed.state import StateJob, apply_state, load_state, preload_state, save_state
from tcbridge.threatconnect.records import Indicator
from tests.unit.test_feed_builder import address, file, host
from tests.unit.test_feed_merge import _made

WEB = "https://tc.example.com"


def _settings(grouping: str = "Condensed") -> FeedSettings:
    excluded = Exclusions.from_lines(ips=["198.51.0.0/24"], hosts=["h3.example.com"])
    return FeedSettings(
        grouping=grouping,  # type: ignore[arg-type]
        exclusions=excluded,
        min_score=40,
        web_url=WEB,
    )


def _builder(indicators: list[Indicator], grouping: str = "Condensed") -> FeedBuilder:
    builder = FeedBuilder(_settings(grouping))
    for at in range(0, len(indicators), 7):
        builder.add(indicators[at : at + 7])
    return builder


def _patched(
    base: list[Indicator],
    gone: list[Indicator],
    new: list[Indicator],
    grouping: str,
    indexed: bool = False,
) -> FeedBuilder:
    builder = _builder(new, grouping)
    state = _builder(base, grouping).state()
    builder.rebase(state, _builder(gone, grouping), state.index() if indexed else None)
    return builder


@settings(max_examples=60, deadline=None)
@given(
    grouping=st.sampled_from(["Condensed", "MaxCondensed"]),
    seed=st.integers(0, 10_000),
    removed=st.lists(st.integers(0, 199), max_size=120),
    added=st.integers(0, 60),
    indexed=st.booleans(),
)
def test_a_patched_builder_builds_the_same_feed(
    grouping: str, seed: int, removed: list[int], added: int, indexed: bool
) -> None:
    """
    Any indicators taken out of a state (old versions of changed ones,
    deleted ones, every one of a label) and any added (new versions, new
    values, values other indicators hold) give the bytes and figures a
    builder given the remaining and new indicators gives, whether the
    state's columns were indexed ahead or not.
    """
    base = _made(seed, 200)
    gone = sorted(set(removed))
    new = _made(seed + 1, added)
    kept = [one for at, one in enumerate(base) if at not in set(gone)]
    patched = _patched(base, [base[at] for at in gone], new, grouping, indexed)
    whole = _builder(kept + new, grouping)
    assert patched.build_bytes() == whole.build_bytes()
    assert patched.stats == whole.stats


def test_a_label_with_nothing_left_is_forgotten() -> None:
    """
    A label whose every indicator goes is no longer counted, and a label
    seen for the first time afterwards is numbered after those left.
    """
    one = [host("a.example.com", source="One", rating=5.0)]
    two = [host("b.example.com", source="Two", rating=5.0)]
    three = [address("203.0.113.9", source="Three", rating=5.0)]
    patched = _patched(one + two, one, three, "Condensed")
    whole = _builder(two + three)
    assert patched.build_bytes() == whole.build_bytes()
    assert set(patched.stats.per_source) == {"Two", "Three"}


def test_taking_out_what_is_not_there_is_refused() -> None:
    """
    An indicator the state never took in, or took in with another score or
    tags, cannot be taken out: the patch is refused.
    """
    base = [file(rating=5.0, tags=("Crime",)), host("a.example.com", rating=5.0)]
    for gone in (
        [host("b.example.com", rating=5.0)],
        [file(rating=4.0, tags=("Crime",))],
        [file(rating=5.0, tags=("Other",))],
        [host("a.example.com", rating=5.0, source="Elsewhere")],
        [host("a.example.com", rating=5.0)] * 2,
    ):
        with pytest.raises(PatchError):
            _patched(base, gone, [], "Condensed")


def test_other_settings_and_groupings_are_not_patched() -> None:
    """
    A state made with other settings is refused; Expanded feeds, feeds
    without a web_url and feeds with an age limit are never patched.
    """
    builder = _builder([host("a.example.com", rating=5.0)])
    other = FeedBuilder(FeedSettings(web_url=WEB, min_score=0))
    with pytest.raises(PatchError):
        builder.rebase(other, FeedBuilder(other.settings))
    assert settings_patchable(_settings("MaxCondensed"))
    assert not settings_patchable(_settings("Expanded"))
    assert not settings_patchable(FeedSettings())
    assert not settings_patchable(FeedSettings(web_url=WEB, modified_after=1))
    expanded = FeedBuilder(FeedSettings(grouping="Expanded", web_url=WEB))
    with pytest.raises(PatchError):
        expanded.rebase(FeedBuilder(expanded.settings).state(), FeedBuilder(expanded.settings))


def test_a_state_file_round_trips(tmp_path: Path) -> None:
    """
    A state written and read back builds what the builder it was written
    from builds; the history is not kept.
    """
    indicators = _made(7, 100)
    path = str(tmp_path / "state")
    save_state(path, _builder(indicators))
    assert load_state(path).build_bytes() == _builder(indicators).build_bytes()


def test_an_unreadable_state_is_refused(tmp_path: Path) -> None:
    """
    A state file that is cut, holds something else, or is missing gives
    PatchError, never a traceback or a half-patched builder.
    """
    path = tmp_path / "state"
    save_state(str(path), _builder(_made(3, 50)))
    path.write_bytes(path.read_bytes()[:100])
    other = tmp_path / "other"
    other.write_bytes(b"\x80\x05\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    for bad in (path, other, tmp_path / "missing"):
        with pytest.raises(PatchError):
            load_state(str(bad))


def test_a_build_job_keeps_and_uses_state(tmp_path: Path) -> None:
    """
    A build job keeps its builder's state before building; the next one,
    laid over it, builds what a builder given the new data builds; one
    laid over an unusable state builds nothing and says why.
    """
    base, changed = _made(11, 150), _made(12, 20)
    kept = str(tmp_path / "kept")
    first = run_job(BuildJob(_builder(base), str(tmp_path), False, False, None, StateJob(kept)))
    assert first.feed is not None and first.unpatched is None
    state = StateJob(save_to=str(tmp_path / "next"), base=kept, minus=_builder(base[:30]))
    second = run_job(BuildJob(_builder(changed), str(tmp_path), False, False, None, state))
    assert second.feed is not None
    want = _builder(base[30:] + changed).build_bytes()
    with open(second.feed.path, "rb") as f:
        assert f.read() == want
    assert load_state(str(tmp_path / "next")).build_bytes() == want
    bad = StateJob(base=str(tmp_path / "missing"), minus=_builder([]))
    third = run_job(BuildJob(_builder(changed), str(tmp_path), False, False, None, bad))
    assert third.feed is None and third.unpatched is not None
    assert "cannot be read" in third.unpatched


def test_a_state_read_ahead_is_used_only_if_it_is_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A state read and indexed ahead (as a build child does while the pull
    runs) is what the job starts from when the job names that file,
    unchanged: it is not read again.  A file replaced since, or another
    file, is read anew, and the build is the one its content gives.
    """
    base, changed = _made(21, 150), _made(22, 20)
    path = str(tmp_path / "state")
    save_state(path, _builder(base))
    preloaded = preload_state(path)
    assert preloaded is not None
    reads: list[str] = []
    monkeypatch.setattr(state_module, "load_state", lambda p: reads.append(p) or load_state(p))
    builder = _builder(changed)
    apply_state(builder, StateJob(base=path, minus=_builder(base[:30])), preloaded)
    assert reads == []
    assert preloaded.take(path) is None  # the build does not hold it
    assert builder.build_bytes() == _builder(base[30:] + changed).build_bytes()
    # The file replaced since it was read ahead: read again.
    save_state(path, _builder(base[:100]))
    preloaded = preload_state(path)
    reads.clear()
    save_state(path + ".new", _builder(base[50:]))
    os.replace(path + ".new", path)
    builder = _builder(changed)
    apply_state(builder, StateJob(base=path, minus=_builder(base[50:60])), preloaded)
    assert reads == [path]
    assert builder.build_bytes() == _builder(base[60:] + changed).build_bytes()
    assert preload_state(str(tmp_path / "missing")) is None
    # A job that starts from no state lets what was read go, unused.
    preloaded = preload_state(path)
    assert preloaded is not None
    apply_state(_builder(changed), StateJob(save_to=str(tmp_path / "kept")), preloaded)
    assert preloaded.take(path) is None
    # Whatever goes wrong reading ahead, the job is left to read the file.
    monkeypatch.setattr(FeedBuilder, "index", lambda self: 1 / 0)
    assert preload_state(path) is None


def test_a_child_started_ahead_builds_from_the_state_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A build child started ahead with a state file to read (C{--wait
    STATE}) builds its job from it without reading it again.
    """
    base, changed = _made(31, 120), _made(32, 10)
    path = str(tmp_path / "state")
    save_state(path, _builder(base))
    state = StateJob(base=path, minus=_builder(base[:10]))
    write_job(
        str(tmp_path / "job"), BuildJob(_builder(changed), str(tmp_path), False, False, None, state)
    )
    given = f"{tmp_path / 'job'}\0{tmp_path / 'outcome'}\0".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(given)))
    reads: list[str] = []
    real = state_module.load_state
    monkeypatch.setattr(state_module, "load_state", lambda p: reads.append(p) or real(p))
    assert job_main([WAIT, path]) == 0
    assert reads == [path]  # once, ahead
    outcome = read_outcome(str(tmp_path / "outcome"))
    assert outcome.feed is not None
    with open(outcome.feed.path, "rb") as f:
        assert f.read() == _builder(base[10:] + changed).build_bytes()


def test_apply_state_needs_what_to_take_out() -> None:
    """
    A state to start from without the builder of what to take out of it is
    refused.
    """
    with pytest.raises(PatchError):
        apply_state(_builder([]), StateJob(base="somewhere"))


def test_equal_values_are_taken_out_one_at_a_time() -> None:
    """
    A value two indicators hold with the same score and tags (two sources
    under one label) loses one entry when one of them goes, and stays in
    the feed.
    """
    twice = [host("same.example.com", rating=5.0, id="7")] * 2
    built = _patched(twice, twice[:1], [], "Condensed").build_bytes()
    assert b"same.example.com" in built
    assert built == _builder(twice[:1]).build_bytes()
