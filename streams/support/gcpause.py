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
