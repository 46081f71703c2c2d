"""
Tests for how L{tcbridge.feed.forked} passes results through a pipe: one
pickle at a time, read as it is unpickled, with a deadline.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator

import pytest

from tcbridge.feed.forked import receive_pickled, send_pickled


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def test_results_sent_one_after_another_come_back_one_at_a_time(pipe: tuple[int, int]) -> None:
    """
    Each receive takes exactly one result and nothing of the next, however
    the result is made of bytes, arrays and text.
    """
    from array import array

    read_end, write_end = pipe
    first = (3, {"data": b"x" * 20_000, "rows": array("I", range(1000)), "name": "ok\n"})
    second = (4, bytearray(b"y" * 10_000))
    send_pickled(write_end, first)
    send_pickled(write_end, second)
    deadline = time.monotonic() + 5
    assert receive_pickled(read_end, deadline) == first
    assert receive_pickled(read_end, deadline) == second


def test_a_sender_that_ends_midway_is_an_end_of_file(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    data = pickle.dumps(b"z" * 5_000, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(write_end, data[: len(data) // 2])
    os.close(write_end)
    with pytest.raises(EOFError):
        receive_pickled(read_end, time.monotonic() + 5)


def test_nothing_sent_by_the_deadline_is_a_timeout(pipe: tuple[int, int]) -> None:
    read_end, _ = pipe
    with pytest.raises(TimeoutError):
        receive_pickled(read_end, time.monotonic() - 1)
