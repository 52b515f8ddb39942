"""The garbage collector as `serve` tunes it before its first cycle: a young generation large
enough that a cycle's short-lived objects do not set off hundreds of passes, and the objects
of start-up frozen out of every pass."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from exporter.gc_tuning import YOUNG_THRESHOLD, tune_for_cycles


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_raises_the_young_threshold_and_freezes_what_exists() -> None:
    _, middle, old = gc.get_threshold()
    survivor = [object() for _ in range(10)]
    tune_for_cycles()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert gc.get_freeze_count() > len(survivor)
    assert not any(o is survivor for o in gc.get_objects())  # frozen: no pass walks it


@pytest.mark.usefixtures("restored_gc")
def test_garbage_in_reference_cycles_is_still_collected() -> None:
    tune_for_cycles()

    class Node:
        def __init__(self) -> None:
            self.other: Node = self

    made = YOUNG_THRESHOLD * 5
    for _ in range(made):
        Node()
    alive = sum(1 for o in gc.get_objects() if isinstance(o, Node))
    assert alive < made / 2  # the automatic passes ran, without being asked
    gc.collect()
    assert not any(isinstance(o, Node) for o in gc.get_objects())
