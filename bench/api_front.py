"""The local HTTP API's own cost: what serving a POST /orders takes, the function aside.

`LocalHttpApi` plays the template's API in this process with a function that answers 202 at
once, and a client in another process posts orders at a fixed rate over kept-alive
connections. Printed: the serving process's CPU per request and the latency percentiles.

    .venv/bin/python bench/api_front.py --rate 150 --seconds 20

To measure another checkout's front with the same load, put its packages first on the path:
`PYTHONPATH=<checkout>/local/src:<checkout>/src .venv/bin/python bench/api_front.py --root <checkout>`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orderpipe_local

try:  # where the template's API is read: apigw.events since the front is uvicorn's
    from orderpipe_local.apigw.events import http_api_from_template
except ImportError:
    from orderpipe_local.apigw.server import http_api_from_template  # type: ignore[attr-defined,no-redef]
from orderpipe_local.apigw.server import LocalHttpApi
from orderpipe_local.stack.template import load_template

ROOT = Path(__file__).resolve().parent.parent
ORDER = json.dumps(
    {
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "items": [{"sku": "BOOK-1", "quantity": 1, "unitPrice": "12.50"}],
        "currency": "EUR",
    }
).encode()


class Answers202:
    """A function that takes every order at once: what is measured is the front alone."""

    function_id = "IngestFunction"
    concurrency = 4
    available = True

    def __init__(self) -> None:
        self.invocations = 0
        self.errors = 0

    def invoke(self, event: dict[str, Any]) -> Any:
        self.invocations += 1
        headers = {"Content-Type": "application/json"}
        return {"statusCode": 202, "headers": headers, "body": '{"status":"ACCEPTED"}'}

    def health(self) -> Any:  # Invocable's, for the status line: the front alone never asks
        # Imported here: a checkout measured with --base may predate it.
        from orderpipe_local.runtime.functions import FunctionHealth, FunctionState

        return FunctionHealth(self.function_id, FunctionState.OK, self.concurrency, self.concurrency)


def post_orders(port: int, rate: float, seconds: float, connections: int, results: Connection) -> None:
    """Open loop: request i is due at start + i / rate, sent on connection i % connections."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    total = int(rate * seconds)

    def sender(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for index in range(offset, total, connections):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            connection.request("POST", "/orders", ORDER, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 202, response.status
            with lock:
                latencies.append(time.monotonic() - sent)
        connection.close()

    threads = [threading.Thread(target=sender, args=(offset,)) for offset in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.send(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose template.yaml is read")
    args = parser.parse_args()

    ours, theirs = multiprocessing.get_context("fork").Pipe()
    api = LocalHttpApi(http_api_from_template(load_template(args.root / "template.yaml")), port=0)
    client = multiprocessing.get_context("fork").Process(
        target=post_orders, args=(api.port, args.rate, args.seconds, args.connections, theirs)
    )
    function = Answers202()
    api.start({function.function_id: function})
    cpu_before = time.process_time()
    client.start()
    latencies: list[float] = ours.recv()
    cpu = time.process_time() - cpu_before
    client.join()
    api.close(5)

    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"front: {Path(orderpipe_local.__file__).parent}")
    cpu_ms = cpu / len(latencies) * 1000
    print(
        f"api front: {len(latencies)} requests at {args.rate:.0f}/s; CPU {cpu_ms:.3f} ms a request;"
        f" latency p50 {statistics.median(latencies) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
