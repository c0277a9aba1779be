"""`orderpipe local --auth`: the pipeline is its own OpenID issuer.

It generates an RSA key at start, serves its OpenID configuration and JWKS on a port of its own
(`--auth-port`, default 3001) with the standard library's HTTP server, and is the issuer and
audience of the template's JWT authorizer (`AuthIssuer`, `AuthAudience`), so the local API checks
tokens against these keys as API Gateway checks them against a real provider's.
`orderpipe token` signs tokens with the key, which is kept beside the state file while the
pipeline runs (owner-only permissions; a new one each start, so old tokens stop working).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

from orderpipe_local.apigw.auth import ALGORITHMS
from orderpipe_local.config import DEFAULT_AUTH_PORT, DEFAULT_TOKEN_LIFETIME_SECONDS

LOCAL_AUDIENCE = "orderpipe-local"
_DISCOVERY = "/.well-known/openid-configuration"
_JWKS = "/.well-known/jwks.json"


def new_signing_key() -> RSAKey:
    return RSAKey.generate_key(
        2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": ALGORITHMS[0]}, private=True
    )


def issue_token(
    key: RSAKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    scopes: Sequence[str] = (),
    expires_in: int = DEFAULT_TOKEN_LIFETIME_SECONDS,
    now: float | None = None,
) -> str:
    """An access token as an OAuth server issues one: `scope` space-separated (RFC 8693, Cognito)."""
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + expires_in,
        "jti": str(uuid.uuid4()),
        "token_use": "access",
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode({"alg": ALGORITHMS[0], "kid": key.kid, "typ": "JWT"}, claims, key)


def write_key(key: RSAKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(key.as_dict(private=True), file)
    temporary.replace(path)


def read_key(path: Path) -> RSAKey:
    return RSAKey.import_key(json.loads(path.read_text()))


class LocalIssuer:
    """The issuer's key and its discovery and JWKS documents on `host:port` (bound at once)."""

    def __init__(self, key_file: Path, host: str = "127.0.0.1", port: int = DEFAULT_AUTH_PORT) -> None:
        self.key = new_signing_key()
        self.key_file = key_file
        self.audience = LOCAL_AUDIENCE
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as error:
            raise OSError(f"the issuer cannot listen on {host}:{port}: {error.strerror}") from error
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        shown = "127.0.0.1" if bound_host in ("0.0.0.0", "") else str(bound_host)
        self.url = f"http://{shown}:{bound_port}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        write_key(self.key, self.key_file)
        self._thread = threading.Thread(target=self._server.serve_forever, name="issuer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
        self.key_file.unlink(missing_ok=True)

    def documents(self) -> dict[str, dict[str, Any]]:
        return {
            _DISCOVERY: {
                "issuer": self.url,
                "jwks_uri": self.url + _JWKS,
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ALGORITHMS,
            },
            _JWKS: {"keys": [self.key.as_dict(private=False)]},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                document = issuer.documents().get(self.path.partition("?")[0])
                status = HTTPStatus.OK if document is not None else HTTPStatus.NOT_FOUND
                body = json.dumps(document or {"message": "Not Found"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # the console is the pipeline's
                pass

        return Handler
