"""`orderpipe local` as a subprocess on free ports, reached over HTTP only."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orderpipe_local.testing import RunningPipeline, start_pipeline


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[RunningPipeline]:
    """A running `orderpipe local`; stopped (SIGTERM, then SIGKILL) after the test."""
    running = start_pipeline(tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(60)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
