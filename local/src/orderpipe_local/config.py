"""Where `orderpipe local` and `orderpipe invoke` find things, and the template they run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orderpipe_local.stack.template import Template, load_template
from orderpipe_local.state import STATE_DIR, STATE_FILE

LOCAL_STACK_NAME = "orderpipe-local"
DEFAULT_API_PORT = 3000
DEFAULT_AWS_PORT = 4566  # the port AWS emulators conventionally use; events/env.local.json names it
LOCAL_SUPPORT_EMAIL = "support@orderpipe.local"
DEFAULT_DRAIN_TIMEOUT_SECONDS = 60.0
DEFAULT_WORKERS = 4
DEFAULT_BACKGROUND_NICE = 10
DEFAULT_UNAVAILABLE_TIMEOUT_SECONDS = 30.0
DEFAULT_AUTH_PORT = 3001
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600
AUTH_KEY_FILE = "issuer-key.json"


@dataclass
class PipelineConfig:
    root: Path
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    aws_host: str = "127.0.0.1"
    aws_port: int = DEFAULT_AWS_PORT
    outbox_dir: Path | None = None
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None
    state_file: Path | None = None
    function_log: Path | None = None
    endpoint_log: Path | None = None
    # Where a stop writes what it could not finish (`orderpipe_local.leftovers`).
    leftover_dir: Path | None = None
    # The endpoint's journal of accepted messages (`orderpipe_local.moto.journal`).
    journal: Path | None = None
    stack_name: str = LOCAL_STACK_NAME
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_SECONDS
    # Execution environments (worker processes) of each function invoked concurrently: those
    # the HTTP API routes to and those an SQS queue triggers; 0 runs them in this process, one
    # invocation at a time.
    workers: int = DEFAULT_WORKERS
    # The niceness of what works off the queue and the stream (their functions' workers and
    # moto's DynamoDB): on a busy machine the API answers first and the queue absorbs the
    # burst, as the pipeline's stages scale apart in AWS. The API's own DynamoDB calls
    # (idempotency records, GET /orders/{id}) share the lower priority. 0: all at the same one.
    background_nice: int = DEFAULT_BACKGROUND_NICE
    # How long a function may stay unavailable (none of its execution environments up, none
    # could be started) before the pipeline stops with an error naming it: meanwhile the API
    # answers 503 for it, or its queue or stream keeps what it has not taken.
    unavailable_timeout: float = DEFAULT_UNAVAILABLE_TIMEOUT_SECONDS
    # Faults to inject in front of moto from the start (`orderpipe_local.moto.faults` specs:
    # errors and delays), the fraction of SQS messages its event sources deliver twice, and the
    # seed both are drawn with (None: one chosen at random, and printed, so a run can be repeated).
    faults: list[str] = field(default_factory=list)
    duplicate_deliveries: float = 0.0
    fault_seed: int | None = None
    # `--auth`: the pipeline is the issuer of the API's JWT authorizer (`orderpipe_local.issuer`),
    # its OpenID configuration and JWKS on the API's host at this port.
    auth: bool = False
    auth_port: int = DEFAULT_AUTH_PORT
    # The issuer's signing key while the pipeline runs, for `orderpipe token`.
    auth_key_file: Path | None = None

    def __post_init__(self) -> None:
        local = self.root / STATE_DIR
        self.outbox_dir = self.outbox_dir or local / "outbox"
        self.state_file = self.state_file or local / STATE_FILE
        self.function_log = self.function_log or local / "functions.log"
        self.endpoint_log = self.endpoint_log or self.function_log.parent / "moto.log"  # logs together
        self.leftover_dir = self.leftover_dir or self.state_file.parent / "left-over"
        self.journal = self.journal or self.state_file.parent / "journal.jsonl"
        self.auth_key_file = self.auth_key_file or self.state_file.parent / AUTH_KEY_FILE


def load_local_template(config: PipelineConfig) -> Template:
    """The template with samconfig's [default] values and the overrides; a local support
    address when none is configured, so the support emails reach the outbox."""
    template = load_template(
        config.root / "template.yaml", overrides=config.parameter_overrides, stack_name=config.stack_name
    )
    if "SupportEmail" in template.parameters and not template.parameters["SupportEmail"]:
        overrides = config.parameter_overrides | {"SupportEmail": LOCAL_SUPPORT_EMAIL}
        template = load_template(
            config.root / "template.yaml", overrides=overrides, stack_name=config.stack_name
        )
    return template
