"""The long-running processes freeze what survives, so full collections stay short."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT


def test_survivors_are_frozen_out_of_the_collectors_reach() -> None:
    # Given a process holding a million objects (in a child: freezing is for the process's life)
    program = textwrap.dedent(
        """
        import gc, time
        from orderpipe.local.gc_pauses import freeze_survivors

        held = [[n] for n in range(1_000_000)]
        before = gc.get_freeze_count()
        freeze_survivors(interval=0.05)
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        print(before, gc.get_freeze_count())
        """
    )
    # When it freezes its survivors
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )

    # Then they are frozen: a full collection no longer walks them
    before, after = map(int, result.stdout.split())
    assert before == 0
    assert after >= 1_000_000
