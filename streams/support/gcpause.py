"""Pausing Python's cyclic garbage collector while a large structure is built.

Building the registry (100k identities: millions of dicts, tuples and records, and no
reference cycles) set off full collections that walked the growing structure again and
again: a quarter of a topic catch-up and most of a YAML load went there. Reference counting
still frees everything as usual while paused; only the search for cycles waits.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (synchronous code only: never across an
    ``await``), restoring its previous state however the block ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_long_lived() -> None:
    """Call once start-up has built what lives as long as the process (modules, rules, the
    registry and its indices): one full collection now, then those objects are left out of
    every later one (:func:`gc.freeze`). Otherwise the first full collection after the
    catch-up (its threshold counts the objects built with the collector paused) walks the
    whole registry in the middle of the event stream: 3 µs per login event of a 20k burst,
    measured with bench/login_throughput.py. They are still freed by reference counting;
    only a reference cycle among them would stay until :func:`thaw`."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Undo :func:`freeze_long_lived` (a stopping worker whose process goes on: tests)."""
    gc.unfreeze()
