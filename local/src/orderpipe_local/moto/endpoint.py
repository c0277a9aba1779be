"""The local AWS endpoint: moto in server mode, in child processes on loopback ports.

Child processes, so moto's CPU work (every SQS, DynamoDB and SNS call of the pipeline) does not
compete with the API and the handlers for one GIL. Two of them, each with a GIL of its own:
DynamoDB and DynamoDB Streams (the writer's and the notifier's tables) are served by a second
moto, so an SQS call on the POST path never waits behind a 100-item transaction. The endpoint's
one URL still serves every service: it forwards DynamoDB's calls (and `/moto-api/reset`) to the
second; the functions and the stream poller reach it directly (`AWS_ENDPOINT_URL_DYNAMODB`...).

A child binds its port itself (port 0 picks a free one, without the race of probing for a free
port first) and reports it on stdout; it exits when told to (SIGTERM) or when its parent goes
away (stdin closes), so an endpoint never outlives the pipeline that started it.

Each child applies `orderpipe_local.moto.patches`: every fix, and the speed patches that
`ORDERPIPE_MOTO_SPEED_PATCHES` selects (`off` for none), or exactly the ones `moto_patches` names.

Run as `python -m orderpipe_local.moto.endpoint --host H --port P [--only-dynamodb]
[--moto-patches NAME,...]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

import urllib3

from orderpipe_local.moto.call_log import CallLog, call_log_directory
from orderpipe_local.moto.faults import FaultError, FaultInjector, FaultList, parse_fault
from orderpipe_local.moto.journal import MessageJournal
from orderpipe_local.moto.patches import apply_moto_patches, selected_patches
from orderpipe_local.moto.wsgi_server import WsgiApp, WsgiServer
from orderpipe_local.runtime.gc_pauses import freeze_survivors
from orderpipe_local.versions import VersionMismatch, check_pinned_versions

DEFAULT_HOST = "127.0.0.1"
_READY_PREFIX = "orderpipe-endpoint "
# The services the second moto serves, by the prefix of their X-Amz-Target.
DYNAMODB_SERVICES = {"DynamoDB_20120810": "dynamodb", "DynamoDBStreams_20120810": "dynamodbstreams"}
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The endpoint did not start (port taken, moto missing) or stopped answering."""


class AwsEndpoint:
    """moto's server in a child process: `start()`, then `url`, then `stop()`.

    `port=0` lets the child pick a free port. `log_path` receives the child's own output
    (moto's warnings and tracebacks); per-request logging is off, it would cost moto's CPU.
    `only_dynamodb` is the second moto, started by the first: it writes to the first's log.
    `dynamodb_nice` is the niceness of the process serving DynamoDB (see
    PipelineConfig.background_nice). `moto_patches` names the patches of moto to apply
    (`orderpipe_local.moto.patches.PATCHES`; `()` for moto as it ships); by default every fix and
    the speed patches `ORDERPIPE_MOTO_SPEED_PATCHES` selects. Once started, `moto_patches` holds
    the ones applied.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        log_path: Path | None = None,
        *,
        only_dynamodb: bool = False,
        dynamodb_nice: int = 0,
        moto_patches: Collection[str] | None = None,
        journal: Path | None = None,
        faults: Sequence[str] = (),
        fault_seed: int = 0,
    ) -> None:
        """`journal`: where SQS's accepted messages are appended (`moto.journal`). `faults`: the
        specs of the faults to inject from the start (`moto.faults`), drawn with `fault_seed`."""
        self.host = host
        self.journal = journal
        self.faults = tuple(faults)
        self.fault_seed = fault_seed
        self.requested_port = port
        self.log_path = log_path
        self.only_dynamodb = only_dynamodb
        self.dynamodb_nice = dynamodb_nice
        # Resolved here, so that a bad ORDERPIPE_MOTO_SPEED_PATCHES fails in the caller, in words.
        try:
            self.moto_patches = tuple(moto_patches) if moto_patches is not None else selected_patches()
        except ValueError as error:
            raise EndpointError(str(error)) from error
        self.port: int | None = None
        self.service_urls: dict[str, str] = {}  # the services served on a URL of their own
        self.dynamodb_pid: int | None = None  # the process that serves them
        self._process: subprocess.Popen[str] | None = None
        self._log_file: IO[str] | None = None

    @property
    def url(self) -> str:
        """The endpoint URL for clients (a wildcard bind is reached through the loopback)."""
        if self.port is None:
            raise EndpointError("the endpoint is not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, service: str) -> str:
        """Where a client of `service` ("dynamodb", "sqs"...) is best sent."""
        return self.service_urls.get(service, self.url)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = _START_TIMEOUT_SECONDS) -> None:
        """Launch the child and wait until it answers."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the child without waiting for it (do other work, then `wait_ready`)."""
        if self._process is not None:
            raise EndpointError("the endpoint is already started")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("w", encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "orderpipe_local.moto.endpoint",
            "--host",
            self.host,
            "--port",
            str(self.requested_port),
            *(["--only-dynamodb"] if self.only_dynamodb else []),
            *(["--dynamodb-nice", str(self.dynamodb_nice)] if self.dynamodb_nice else []),
            f"--moto-patches={','.join(self.moto_patches)}",
            *(["--journal", str(self.journal)] if self.journal is not None else []),
            *(f"--fault={spec}" for spec in self.faults),
            f"--fault-seed={self.fault_seed}",
        ]
        stderr: IO[str] | int | None = self._log_file if self._log_file is not None else subprocess.DEVNULL
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if self.only_dynamodb else stderr,
            text=True,
            # Ctrl-C in a terminal signals the whole foreground process group; the parent
            # decides when the endpoint stops (after the pipeline drained), so keep it apart.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = _START_TIMEOUT_SECONDS) -> None:
        if self._process is None:
            raise EndpointError("the endpoint is not launched")
        try:
            self.port = self._read_port(timeout)
            self._wait_until_answering(timeout)
        except BaseException:
            self.stop()
            raise

    def _read_port(self, timeout: float) -> int:
        assert self._process is not None
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        stdout = self._process.stdout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = stdout.readline()
            if not line:  # the child exited before it could bind
                self._process.wait()
                raise EndpointError(
                    f"moto could not listen on {self.host}:{self.requested_port}"
                    f" (exit code {self._process.returncode}){self._log_hint()}"
                )
            if line.startswith(_READY_PREFIX):
                ready = json.loads(line[len(_READY_PREFIX) :])
                self.service_urls = dict(ready.get("services", {}))
                self.dynamodb_pid = ready.get("dynamodb_pid")
                self.moto_patches = tuple(ready["moto_patches"])
                port: int = ready["port"]
                return port
        raise EndpointError(f"moto did not start within {timeout:.0f} s{self._log_hint()}")

    def _wait_until_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2.0):
                    return
            except urllib.error.HTTPError:
                return  # an HTTP answer of any kind: the server is up
            except OSError as error:
                if time.monotonic() > deadline or not self.running:
                    raise EndpointError(f"moto does not answer on {self.url}: {error}") from error
                time.sleep(0.05)

    def _log_hint(self) -> str:
        return f"; see {self.log_path}" if self.log_path is not None else ""

    def wait(self, timeout: float | None = None) -> int:
        """Until the child exits (subprocess.TimeoutExpired after `timeout`): its exit code."""
        process = self._process
        return process.wait(timeout) if process is not None else 0

    def stop(self, timeout: float = _STOP_TIMEOUT_SECONDS) -> None:
        """Ask the child to exit (SIGTERM), wait, kill it if it does not. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("moto did not stop within %.0f s; killing it", timeout)
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class JsonProtocolRoutes:
    """moto's app, with the pipeline's hot calls - the JSON protocol's `POST /` of SQS, DynamoDB
    and DynamoDB Streams, told apart by their X-Amz-Target - handed straight to the moto handler
    Flask would route them to, as moto's Flask view does. Flask's routing, request context and
    CORS hooks cost a third of moto's CPU per call; everything else goes through moto's app."""

    def __init__(
        self, app: WsgiApp, dynamodb_url: str | None = None, journal: MessageJournal | None = None
    ) -> None:
        from moto.core.request import Request
        from moto.dynamodb.responses import DynamoHandler
        from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
        from moto.sqs.responses import SQSResponse

        class ServerRequest(Request):
            from_wsgi_server = True

        self.app = app
        self._journal = journal
        self._request = ServerRequest
        self._dynamodb = _Forwarder(dynamodb_url) if dynamodb_url else None
        self._handlers: dict[str, Callable[..., Any]] = {
            "AmazonSQS": SQSResponse.dispatch,
            "DynamoDB_20120810": DynamoHandler.dispatch,
            "DynamoDBStreams_20120810": DynamoDBStreamsHandler.dispatch,
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "").partition(".")[0]
        if self._dynamodb is not None:
            if target in DYNAMODB_SERVICES:
                return self._dynamodb(environ, start_response)
            if environ.get("PATH_INFO") == "/moto-api/reset" and environ["REQUEST_METHOD"] == "POST":
                self._dynamodb.reset()
        handler = self._handlers.get(target)
        if handler is None or environ["REQUEST_METHOD"] != "POST" or environ.get("PATH_INFO") != "/":
            return self.app(environ, start_response)
        from botocore.exceptions import ClientError
        from flask import Response
        from moto.moto_api import recorder

        request = self._request(environ)
        recorder._record_request(request)
        try:
            result = handler(request, request.raw_url, dict(request.headers))
        except ClientError as error:
            result = 400, {}, error.response["Error"]["Message"]
        status, headers, body = result if len(result) == 3 else (200, {}, result)
        if self._journal is not None and status == 200 and target == "AmazonSQS":
            answer = body.encode() if isinstance(body, str) else bytes(body)
            self._journal.record(environ["HTTP_X_AMZ_TARGET"], request.get_data(), answer)
        response: Iterable[bytes] = Response(response=body, status=status, headers=headers)(
            environ, start_response
        )
        return response


class _Forwarder:
    """Passes a request on to the second moto and its answer back."""

    _HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        # A pool as large as the threads that may forward at once; a kept-alive connection the
        # other end closed is opened again (one retry, no redirects: the answer goes back as is).
        self._pool = urllib3.HTTPConnectionPool(
            parsed.hostname or "127.0.0.1",
            parsed.port or 80,
            maxsize=16,
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=urllib3.Retry(total=1, connect=1, read=0, redirect=False, status=0),
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            name: value
            for key, value in environ.items()
            if key.startswith("HTTP_")
            and (name := key[5:].replace("_", "-").title()).lower() not in self._HOP_BY_HOP
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        path = environ.get("PATH_INFO", "/") + (
            f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else ""
        )
        answer = self._pool.urlopen(
            environ["REQUEST_METHOD"], path, body=body, headers=headers, redirect=False, decode_content=False
        )
        start_response(
            f"{answer.status} {answer.reason}",
            [header for header in answer.headers.items() if header[0].lower() not in self._HOP_BY_HOP],
        )
        return [answer.data]

    def reset(self) -> None:
        self._pool.urlopen("POST", "/moto-api/reset")


def _serve(
    host: str,
    port: int,
    only_dynamodb: bool,
    dynamodb_nice: int,
    moto_patches: list[str],
    journal: Path | None = None,
    faults: Sequence[str] = (),
    fault_seed: int = 0,
) -> int:
    """The child: run moto until SIGTERM/SIGINT or until stdin closes (the parent is gone)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    applied = apply_moto_patches(moto_patches)
    freeze_survivors()
    if only_dynamodb:
        os.nice(dynamodb_nice)

    dynamodb: AwsEndpoint | None = None
    services: dict[str, str] = {}
    if not only_dynamodb:
        dynamodb = AwsEndpoint(
            host,
            0,
            only_dynamodb=True,
            dynamodb_nice=dynamodb_nice,
            moto_patches=moto_patches,
            faults=faults,
            fault_seed=fault_seed,
        )
        try:
            dynamodb.start()
        except EndpointError as error:
            print(f"the DynamoDB endpoint did not start: {error}", file=sys.stderr)
            return 1
        services = dict.fromkeys(DYNAMODB_SERVICES.values(), dynamodb.url)

    # moto's app as moto's own server builds it, served on connections that stay open.
    # Faults in front of it all; the DynamoDB process applies those of the calls it is passed.
    app: WsgiApp = FaultInjector(
        JsonProtocolRoutes(
            DomainDispatcherApplication(create_backend_app),
            dynamodb.url if dynamodb is not None else None,
            MessageJournal(journal) if journal is not None else None,
        ),
        FaultList(fault_seed, [parse_fault(spec) for spec in faults]),
        passed_on=DYNAMODB_SERVICES if dynamodb is not None else (),
        peer=dynamodb.url if dynamodb is not None else None,
    )
    if (calls := call_log_directory()) is not None:
        app = CallLog(app, calls, passed_on=DYNAMODB_SERVICES if dynamodb is not None else ())
    try:
        server = WsgiServer(app, host, port)
    except OSError as error:
        print(f"cannot listen on {host}:{port}: {error}", file=sys.stderr)
        if dynamodb is not None:
            dynamodb.stop()
        return 1
    bound_port = server.port
    serving = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    serving.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping = threading.Event()
    if dynamodb is not None:
        threading.Thread(
            target=_exit_with, args=(dynamodb, stopping), name="DynamoDB endpoint", daemon=True
        ).start()
    ready = {
        "port": bound_port,
        "pid": os.getpid(),
        "services": services,
        "dynamodb_pid": dynamodb.pid if dynamodb is not None else None,
        "moto_patches": applied,
    }
    print(_READY_PREFIX + json.dumps(ready), flush=True)
    try:
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or exited
    except SystemExit:
        pass
    finally:
        stopping.set()
        server.shutdown()
        serving.join()
        if dynamodb is not None:
            dynamodb.stop()
    # Nothing of moto's state outlives it; skip tearing down the interpreter's modules.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


def _exit_with(dynamodb: AwsEndpoint, stopping: threading.Event) -> None:
    """The endpoint is one: when its DynamoDB process dies, this one exits too, so that the
    pipeline sees its endpoint gone instead of answering 202s whose orders cannot be stored."""
    code = dynamodb.wait()
    if not stopping.is_set():
        print(f"the DynamoDB endpoint exited (code {code}); exiting too", file=sys.stderr, flush=True)
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orderpipe_local.moto.endpoint", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--only-dynamodb", action="store_true", help="the second moto (DynamoDB and its streams)"
    )
    parser.add_argument("--dynamodb-nice", type=int, default=0, help="niceness of the DynamoDB moto")
    parser.add_argument(
        "--moto-patches",
        type=lambda names: [name for name in names.split(",") if name],
        default=None,
        help="the moto patches to apply, comma-separated ('' for none); default: every fix and the speed"
        " patches ORDERPIPE_MOTO_SPEED_PATCHES selects",
    )
    parser.add_argument("--journal", type=Path, help="append the messages SQS accepts to this file")
    parser.add_argument(
        "--fault", action="append", default=[], help="a fault to inject (moto.faults), repeatable"
    )
    parser.add_argument("--fault-seed", type=int, default=0, help="the seed the faults are drawn with")
    args = parser.parse_args(argv)
    try:
        for spec in args.fault:
            parse_fault(spec)
    except FaultError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        check_pinned_versions()
    except VersionMismatch as error:
        print(error, file=sys.stderr)
        return 2
    try:
        moto_patches = list(selected_patches() if args.moto_patches is None else args.moto_patches)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return _serve(
        args.host,
        args.port,
        args.only_dynamodb,
        args.dynamodb_nice,
        moto_patches,
        args.journal,
        args.fault,
        args.fault_seed,
    )


if __name__ == "__main__":
    sys.exit(main())
