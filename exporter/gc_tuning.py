"""Python's cyclic garbage collector, tuned for a process that builds a few hundred thousand
short-lived objects every cycle (decoded query answers, rows, figures) and keeps few of them.

With the interpreter's default threshold (a young-generation pass every 700 net allocations)
a cycle at 2,000 models runs hundreds of passes, each of which also walks whatever survived
the last; that was about a fifth of the cycle's CPU. At 2,000 models a cycle holds about
100,000 more container objects at its peak than at its start (the new rows and figures, before
the last cycle's are freed): a young generation of that size runs about four passes a cycle,
all in the pre-render of /metrics that follows it, where one of 10,000 ran a dozen inside the cycle,
each walking the cycle's live objects again. Freezing what exists at start (modules,
configuration, tables) takes the long-lived objects out of every full pass. Reference counting
still frees almost everything at once; only garbage in reference cycles waits a little longer,
bounded by the threshold.
"""

from __future__ import annotations

import gc

# Net container allocations between two young-generation passes (CPython's default is 700);
# the older generations keep their defaults (a pass every 10 passes of the younger one).
YOUNG_THRESHOLD = 100_000


def tune_for_cycles() -> None:
    """Call once, after start-up and before the first cycle."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
