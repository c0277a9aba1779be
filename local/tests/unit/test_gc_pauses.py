"""The long-running processes freeze what survives, so full collections stay short."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from orderpipe_local.testing import ROOT


def test_survivors_are_frozen_out_of_the_collectors_reach() -> None:
    # Given a process holding a million objects (in a child: freezing is for the process's life)
    program = textwrap.dedent(
        """
        import gc, time
        from orderpipe_local.runtime.gc_pauses import freeze_survivors

        import weakref

        class Node:
            pass

        held = [[n] for n in range(1_000_000)]
        before = gc.get_freeze_count()
        thread = freeze_survivors(interval=0.05)
        assert freeze_survivors() is thread  # once a process
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        # A cycle that is garbage by the next freeze is collected, not frozen
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        time.sleep(0.3)
        print(before, gc.get_freeze_count(), gone() is None)
        """
    )
    # When it freezes its survivors
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )

    # Then they are frozen (a full collection no longer walks them), and young garbage is not
    before, after, collected = result.stdout.split()
    assert int(before) == 0
    assert int(after) >= 1_000_000
    assert collected == "True"
