"""`orderpipe local` as a subprocess on free ports, reached over HTTP only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orderpipe_local.testing import RunningPipeline, start_pipeline


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[RunningPipeline]:
    """A running `orderpipe local`; stopped (SIGTERM, then SIGKILL) after the test."""
    running = start_pipeline(tmp_path)
    yield running
    running.stop()
