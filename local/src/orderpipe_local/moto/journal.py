"""The endpoint's journal of accepted messages: what a crash of moto would otherwise take along.

moto keeps every queue in memory; when its process dies, the orders on OrdersQueue - and
those stored but not yet mailed, whose table dies with it - are gone. Every message SQS
accepts is appended here (one JSON line: queue name, body, message attributes) before the
sender gets its answer, so that the pipeline, seeing its endpoint gone, can tell which
accepted orders were not announced yet and keep their messages in a left-over file for
`orderpipe requeue`. Lines are written through to the kernel (a crash of the process loses
none); the file is removed when the pipeline stops cleanly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class MessageJournal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, target: str, request_body: bytes, answer: bytes) -> None:
        """An SQS JSON-protocol call that succeeded: the messages of a SendMessage(Batch)."""
        action = target.rpartition(".")[2]
        if action not in ("SendMessage", "SendMessageBatch"):
            return
        request = json.loads(request_body)
        queue = str(request.get("QueueUrl", "")).rstrip("/").rpartition("/")[2]
        if action == "SendMessage":
            sent = [request]
        else:
            succeeded = {entry["Id"] for entry in json.loads(answer).get("Successful", [])}
            sent = [entry for entry in request.get("Entries", []) if entry.get("Id") in succeeded]
        lines = "".join(
            json.dumps(
                {
                    "queue": queue,
                    "body": entry["MessageBody"],
                    "attributes": entry.get("MessageAttributes", {}),
                }
            )
            + "\n"
            for entry in sent
        )
        with self._lock:
            self._file.write(lines)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's messages; a last line cut short by the crash is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
