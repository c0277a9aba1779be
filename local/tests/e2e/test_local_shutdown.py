"""SIGTERM under load: `orderpipe local` stops accepting, then carries every accepted order through."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orderpipe_local.testing import load_event, start_pipeline

pytestmark = pytest.mark.e2e

ORDER_BODY = load_event("ingest-post-order.json")["body"].encode()
CLIENTS = 8
LOAD_SECONDS_BEFORE_SIGTERM = 2.0


def post_until_refused(
    host: str, port: int, accepted: list[str], refused: threading.Event, unexpected: list[str]
) -> None:
    """Post orders over one kept-alive connection until the API stops taking them."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    while True:
        try:
            connection.request("POST", "/orders", ORDER_BODY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            refused.set()  # the connection was closed: the API stopped
            return
        if response.status == 202:
            accepted.append(json.loads(raw)["orderId"])
            continue
        if response.status != 503:  # 503: a request that came after the API stopped
            unexpected.append(f"{response.status} {raw!r}")
        refused.set()
        return


def test_sigterm_under_load_stores_and_mails_every_accepted_order(tmp_path: Path) -> None:
    # Given a pipeline taking orders from several clients at once
    pipeline = start_pipeline(tmp_path)
    address = urlsplit(pipeline.api_url)
    assert address.hostname is not None
    assert address.port is not None
    accepted: list[str] = []
    unexpected: list[str] = []
    refused = threading.Event()
    clients = [
        threading.Thread(
            target=post_until_refused, args=(address.hostname, address.port, accepted, refused, unexpected)
        )
        for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    time.sleep(LOAD_SECONDS_BEFORE_SIGTERM)

    # When it gets SIGTERM in the middle of the load
    exit_code = pipeline.terminate(timeout=120)
    for client in clients:
        client.join(30)

    # Then it exits 0 once the clients were refused
    console = pipeline.console()
    assert exit_code == 0, console
    assert refused.is_set()
    assert accepted
    assert not unexpected

    # And every order it accepted was stored and mailed, exactly once
    mailed: dict[str, int] = {}
    for mail in pipeline.emails():
        for order_id in re.findall(r"Order id:\s+(\S+)", mail.body):
            mailed[order_id] = mailed.get(order_id, 0) + 1
    assert set(accepted) <= set(mailed), f"{len(set(accepted) - set(mailed))} accepted orders never mailed"
    assert all(mailed[order_id] == 1 for order_id in accepted)

    # And its last status line agrees: all accepted orders stored and notified, no dead letters
    last = [line for line in console.splitlines() if line.startswith("accepted ")][-1]
    assert f"accepted {len(accepted)} " in last, last
    assert f"stored {len(accepted)} " in last, last
    assert f"notified {len(accepted)} " in last, last
    assert "OrdersDLQ 0" in last
    assert "NotifierDLQ 0" in last
