"""The cyclic collector around start-up (streams/support/gcpause.py): what the worker built
while starting is frozen out of later collections, and what it builds afterwards is not."""

from __future__ import annotations

import gc

from streams.support.gcpause import freeze_long_lived, gc_paused, thaw


def _tracked(obj: object, generation: int) -> bool:
    return any(o is obj for o in gc.get_objects(generation))


def test_objects_built_before_the_freeze_are_left_out_of_full_collections() -> None:
    """After start-up the registry-like structure sits in the permanent generation (a full
    collection no longer walks it); a cycle made later is still found and freed; thawing
    puts the old objects back."""
    built = [[str(i)] for i in range(1000)]  # lists stay tracked (small dicts may not)
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() >= len(built)
        assert not _tracked(built[0], 2)
        later: list[object] = []
        later.append(later)  # a reference cycle made after start-up
        gc.collect()
        assert _tracked(later, 2)  # collected passes do see new objects
    finally:
        thaw()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert _tracked(built[0], 2)


def test_the_collector_is_paused_only_inside_the_block() -> None:
    """gc_paused restores the state it found, also when the block raises."""
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
