"""The suite's own scheduling (tests/conftest.py): under pytest-xdist a test marked ``alone``
runs with no other test beside it, ordinary tests run side by side, and an ``alone`` test
that waits is not starved by the other worker's stream of tests. Threads stand in for the
workers: the turn is a pair of ``flock`` locks, which conflict between two opens of the same
file in one process just as between processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import _turn


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_ordinary_tests_run_side_by_side(tmp_path: Path) -> None:
    """Two ordinary tests hold their turns at the same time."""
    inside, leave = threading.Event(), threading.Event()

    def first() -> None:
        with _turn(tmp_path, alone=False):
            inside.set()
            leave.wait(10)

    holder = _in_thread(first)
    assert inside.wait(10)
    second_in = threading.Event()
    second = _in_thread(lambda: _turn_and_set(tmp_path, False, second_in))
    assert second_in.wait(5), "an ordinary test waited for another ordinary one"
    leave.set()
    holder.join(10)
    second.join(10)


def _turn_and_set(lock_dir: Path, alone: bool, flag: threading.Event) -> None:
    with _turn(lock_dir, alone=alone):
        flag.set()


def test_nothing_runs_beside_an_alone_test(tmp_path: Path) -> None:
    """While an ``alone`` test holds its turn, another test waits until it is over."""
    order: list[str] = []
    inside = threading.Event()

    def alone() -> None:
        with _turn(tmp_path, alone=True):
            inside.set()
            order.append("alone in")
            time.sleep(0.3)
            order.append("alone out")

    thread = _in_thread(alone)
    assert inside.wait(10)
    with _turn(tmp_path, alone=False):
        order.append("other")
    thread.join(10)
    assert order == ["alone in", "alone out", "other"]


def test_an_alone_test_waits_for_the_running_one_and_goes_before_newcomers(
    tmp_path: Path,
) -> None:
    """An ``alone`` test waits for the test already running; a test that asks after it
    goes after it (the other worker cannot keep it out by starting test after test)."""
    order: list[str] = []
    running, finish = threading.Event(), threading.Event()

    def running_test() -> None:
        with _turn(tmp_path, alone=False):
            running.set()
            finish.wait(10)
            order.append("running out")

    def alone() -> None:
        with _turn(tmp_path, alone=True):
            order.append("alone")

    def newcomer() -> None:
        with _turn(tmp_path, alone=False):
            order.append("newcomer")

    threads = [_in_thread(running_test)]
    assert running.wait(10)
    threads.append(_in_thread(alone))
    time.sleep(0.2)  # the alone test is queued at the room (holding the gate) by now
    threads.append(_in_thread(newcomer))
    time.sleep(0.2)
    assert order == [], "something ran beside the running test and the waiting alone one"
    finish.set()
    for thread in threads:
        thread.join(10)
    assert order == ["running out", "alone", "newcomer"]
