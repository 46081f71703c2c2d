"""
Tests for L{tcbridge.feed.deflate}: a feed's gzip form, compressed in
segments, is a gzip file of the feed, the same bytes whether compressed
in line or by threads and however the feed comes in, and about as small as
one long stream makes it.
"""

from __future__ import annotations

import gzip
import random
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcbridge.feed import deflate
from tcbridge.feed.deflate import Deflater, gzip_feed, gzip_member


def _document(size: int, seed: int = 1) -> bytes:
    """
    Something like a feed: repeated keys, hex digests, host names.
    """
    rng = random.Random(seed)
    parts = []
    length = 0
    while length < size:
        digest = rng.randbytes(16).hex().encode()
        part = b'{"id":"tc-md5-%d","iocs":{"md5":["%s"],"dns":["h%d.example"]}},' % (
            rng.randrange(100),
            digest,
            rng.randrange(10**6),
        )
        parts.append(part)
        length += len(part)
    return b"".join(parts)[:size]


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deflate, "SEGMENT", 4096)


@settings(max_examples=60, deadline=None)
@given(
    size=st.sampled_from([0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5, 40_000]),
    blocks=st.lists(st.integers(1, 9000), min_size=1, max_size=8),
    threads=st.integers(0, 3),
)
def test_the_same_gzip_however_it_is_made(size: int, blocks: list[int], threads: int) -> None:
    """
    A document fed in blocks of any size, compressed in line or by
    threads, gives the bytes L{gzip_feed} gives, which decompress to the
    document.
    """
    body = _document(size)
    deflater = Deflater(threads=threads)
    at = 0
    turn = 0
    while at < len(body):
        step = blocks[turn % len(blocks)]
        deflater.feed(body[at : at + step])
        at += step
        turn += 1
    made = gzip_member(deflater.finish(), zlib.crc32(body), len(body))
    assert made == gzip_feed(body)
    assert gzip.decompress(made) == body


def test_segments_cost_almost_nothing_in_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Compressed in 1 MiB segments (each primed with what came before it),
    a feed is within a thousandth of one long stream's size.
    """
    monkeypatch.setattr(deflate, "SEGMENT", 1 << 20)
    body = _document(5 << 20)
    made = gzip_feed(body)
    whole = gzip.compress(body, compresslevel=deflate.GZIP_LEVEL, mtime=0)
    assert gzip.decompress(made) == body
    assert abs(len(made) - len(whole)) < len(whole) / 1000


def test_a_failing_compression_fails_the_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A segment that cannot be compressed in a thread fails L{Deflater.finish},
    and the threads end, whether the failure comes before the finish or
    during it.
    """
    failed = threading.Event()

    def broken(segment: bytes, before: bytes, last: bool) -> bytes:
        failed.set()
        raise MemoryError("no room")

    monkeypatch.setattr(deflate, "_compressed", broken)
    for first in ("the failure", "the finish"):
        deflater = Deflater(threads=2)
        deflater.feed(_document(20_000))
        if first == "the failure":
            assert failed.wait(10)
        try:
            with pytest.raises(MemoryError):
                deflater.finish()
            alive = [t for t in threading.enumerate() if t.name.startswith("tcbridge-feedgzip")]
        finally:
            deflater.close()  # so that a failing test does not hang the run
        assert not alive, first
