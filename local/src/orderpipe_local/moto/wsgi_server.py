"""A small HTTP/1.1 WSGI server with persistent connections, for moto's app in the endpoint.

werkzeug's development server, which moto's own server uses, answers each request on a new
connection in a new thread and closes it: every AWS call of the pipeline paid a TCP connect,
a thread start and werkzeug's per-request bookkeeping, half of moto's CPU under load. Here a
connection stays open for as many requests as the client sends on it (botocore keeps a pool of
them), one thread per connection, reading requests with plain buffered I/O and answering each
with one write.

It serves what AWS SDKs send: requests with a Content-Length or chunked bodies; `Expect:
100-continue` is answered. It is for a loopback endpoint, not the Internet: no TLS, no
timeouts on slow clients beyond an idle limit.

Kept against the maintained servers, on two measurements. End to end (2026-12-02,
`bench/compare.py --rate 50 --duration 60`, the endpoint on cheroot 11.1.2 against this server,
in one sitting): POST p50 19.9 against 15.4 ms (1.30x), POST p99 74.6 against 52.8 ms (1.41x),
POST -> mailed p99 2.05 against 1.96 s, CPU per order 32.9 against 30.3 ms (moto's two
processes 45.6 against 38.4 s of CPU): more than 20% worse on latency. Per request
(2026-12-02, 2-core machine,
moto's app behind JsonProtocolRoutes, 3,000 SendMessage from 8 threads over one botocore pool;
every server kept the 8 connections alive): the serving process's CPU per request was 0.88-1.28
ms here, 1.51-1.72 ms with cheroot 11.1.2, 1.55-1.66 ms with waitress 3.0.2 and 1.89 ms with
werkzeug 3.1.9 threaded at HTTP/1.1, i.e. 0.4-0.6 ms more a request. An order costs the
endpoints several requests (SendMessage, PutItem, the idempotency record's writes, a share of
the batched calls) at about 10 ms of CPU an order in all, so an estimated 20-25% more CPU per
order.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_MAX_LINE = 65_536
_MAX_HEADERS = 200
_IDLE_TIMEOUT_SECONDS = 300.0


class _BadRequest(Exception):
    """Answered 400 with its message, and the connection closed."""


class WsgiServer:
    """Serve `app` on host:port (0 picks a free port) until `shutdown()`."""

    def __init__(self, app: WsgiApp, host: str, port: int) -> None:
        self.app = app
        self.socket = socket.create_server((host, port), backlog=512)
        self.host = host
        self.port: int = self.socket.getsockname()[1]
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, address = self.socket.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(connection)
            threading.Thread(
                target=self._serve_connection, args=(connection, address), name="wsgi", daemon=True
            ).start()

    def shutdown(self) -> None:
        """Stop accepting and close every connection (requests in progress finish their write)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)

    def _serve_connection(self, connection: socket.socket, address: tuple[str, int]) -> None:
        connection.settimeout(_IDLE_TIMEOUT_SECONDS)
        reader = connection.makefile("rb")
        try:
            while not self._stopping.is_set():
                try:
                    keep_alive = self._serve_request(connection, reader, address)
                except _BadRequest as error:
                    body = str(error).encode()
                    _send(
                        connection,
                        "400 Bad Request",
                        [("Content-Type", "text/plain")],
                        body,
                        len(body),
                        False,
                    )
                    return
                if not keep_alive:
                    return
        except (OSError, ValueError):
            return  # the client went away or the connection idled out
        finally:
            with self._lock:
                self._connections.discard(connection)
            with contextlib.suppress(OSError):
                reader.close()
                connection.close()

    def _serve_request(
        self, connection: socket.socket, reader: io.BufferedReader, address: tuple[str, int]
    ) -> bool:
        request_line = reader.readline(_MAX_LINE + 1)
        if not request_line:
            raise OSError("closed")
        if request_line in (b"\r\n", b"\n"):  # a stray line between requests
            return True
        try:
            method, target, version = request_line.decode("latin-1").split()
        except ValueError as error:
            raise _BadRequest("malformed request line") from error
        headers = _read_headers(reader)
        if headers.get("expect", "").lower() == "100-continue":
            connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _read_body(reader, headers)
        path, _, query = target.partition("?")
        if "://" in path:  # absolute form
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": target,
            "RAW_URI": target,
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": version,
            "REMOTE_ADDR": address[0],
            "REMOTE_PORT": address[1],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name != "content-length":
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        started: list[Any] = []

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, response_headers]
            return lambda data: None  # moto's app never writes through it

        try:
            result = self.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("the application failed on %s %s", method, target)
            started[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            payload = b"internal error"
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        status_line, response_headers = started
        _send(
            connection,
            status_line,
            response_headers,
            b"" if method == "HEAD" else payload,
            len(payload),
            keep_alive,
        )
        return keep_alive


def _send(
    connection: socket.socket,
    status_line: str,
    headers: list[tuple[str, str]],
    body: bytes,
    length: int,
    keep_alive: bool,
) -> None:
    """The response in one write; `length` is the Content-Length (a HEAD answer has no body)."""
    lines = [f"HTTP/1.1 {status_line}"]
    lines += [
        f"{name}: {value}"
        for name, value in headers
        if name.lower() not in ("content-length", "connection", "transfer-encoding")
    ]
    lines.append(f"Content-Length: {length}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    connection.sendall(head + body)


def _read_headers(reader: io.BufferedReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise OSError("closed")
        if line in (b"\r\n", b"\n"):
            return headers
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise _BadRequest("malformed header line")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise _BadRequest("too many headers")


def _read_body(reader: io.BufferedReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = reader.readline(_MAX_LINE + 1)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as error:
                raise _BadRequest("malformed chunk size") from error
            if size == 0:
                while reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(reader.read(size))
            reader.readline(_MAX_LINE + 1)
    length = headers.get("content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError as error:
        raise _BadRequest("malformed Content-Length") from error
    if size < 0:
        raise _BadRequest("malformed Content-Length")
    body = reader.read(size)
    if len(body) != size:
        raise OSError("closed mid-body")
    return body
