"""The `orderpipe` command: `local`, `invoke`, `requeue`, `faults`, `token`, `dlq`, `doctor`, `openapi`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from orderpipe_local.config import (
    DEFAULT_AUTH_PORT,
    DEFAULT_BACKGROUND_NICE,
    DEFAULT_TOKEN_LIFETIME_SECONDS,
    DEFAULT_UNAVAILABLE_TIMEOUT_SECONDS,
    DEFAULT_WORKERS,
)
from orderpipe_local.stack.template import TemplateError, parse_parameter_overrides, project_root
from orderpipe_local.versions import VersionMismatch, check_pinned_versions

if TYPE_CHECKING:
    from orderpipe_local.config import PipelineConfig
    from orderpipe_local.operate.stack import OperatedStack

_ENV_FILE_HELP = (
    'a `sam local --env-vars` JSON file: {"Parameters": {VAR: value}} for every function and '
    '{"FunctionId": {VAR: value}} for one; as in sam, only variables the template declares are set'
)


def _key_values(text: str) -> dict[str, str]:
    """`KEY=VALUE`, or several in one shell-quoted string as sam takes them (`"A=1 B='x y'"`)."""
    try:
        return parse_parameter_overrides(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _niceness(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError(f"{value} is not a niceness from 0 (as the API) to 19")
    return value


def _fault(kind: str | None) -> Callable[[str], str]:
    """An argparse type: a fault spec, checked (`moto.faults`), kept as its text."""

    def parse(text: str) -> str:
        from orderpipe_local.moto.faults import FaultError, parse_fault

        try:
            return parse_fault(text, kind=kind).spec
        except FaultError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return parse


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate from 0 to 1")
    return rate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderpipe", description="The order pipeline on one machine, without Docker or an AWS account."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local = commands.add_parser(
        "local",
        help="run the whole pipeline locally (API, queue, table, stream, topic, emails)",
        description="Run the pipeline of template.yaml locally: moto as the AWS endpoint, the real "
        "handlers in worker processes, the HTTP API on 127.0.0.1, SNS email delivered to an outbox folder.",
    )
    local.add_argument("--port", type=int, default=3000, help="HTTP API port (default 3000)")
    local.add_argument("--host", default="127.0.0.1", help="HTTP API address (default 127.0.0.1)")
    local.add_argument(
        "--aws-port",
        type=int,
        default=None,
        help="AWS endpoint port (default 4566, as events/env.local.json expects; 0 picks a free one)",
    )
    local.add_argument(
        "--aws-host",
        default="127.0.0.1",
        help="AWS endpoint address (default 127.0.0.1; 0.0.0.0 lets `sam local` containers reach it)",
    )
    local.add_argument("--outbox", type=Path, help="where emails go (default .orderpipe/outbox)")
    local.add_argument("--env-file", type=Path, help=_ENV_FILE_HELP)
    _add_parameter_overrides(local)
    local.add_argument(
        "--log-file",
        type=Path,
        help="function logs (default .orderpipe/functions.log); moto.log goes beside it",
    )
    local.add_argument(
        "--workers",
        "--api-workers",
        dest="workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="worker processes (execution environments) of each function invoked concurrently - "
        "behind the API or triggered by a queue - each handling one invocation at a time "
        f"(default {DEFAULT_WORKERS}; 0 runs them in this process, one at a time)",
    )
    local.add_argument(
        "--background-nice",
        type=_niceness,
        default=DEFAULT_BACKGROUND_NICE,
        help="niceness of the processes that work off the queue and the stream (their functions' "
        "workers, moto's DynamoDB), so that on a busy machine the API answers first and the queue "
        f"absorbs the burst (default {DEFAULT_BACKGROUND_NICE}; 0: the same priority as the API)",
    )
    local.add_argument(
        "--unavailable-timeout",
        type=float,
        default=DEFAULT_UNAVAILABLE_TIMEOUT_SECONDS,
        help="seconds a function may stay unavailable (no execution environment can be started) "
        "before the pipeline stops with an error naming it and exits 1; meanwhile the API answers "
        "503 for it and its queue or stream keeps the events "
        f"(default {DEFAULT_UNAVAILABLE_TIMEOUT_SECONDS:g})",
    )
    local.add_argument(
        "--fault",
        dest="faults",
        action="append",
        type=_fault("error"),
        default=[],
        metavar="SERVICE:Operation=ErrorCode@RATE",
        help="answer that fraction of those AWS calls, whoever makes them, with that AWS error as AWS "
        "sends it (e.g. dynamodb:PutItem=ProvisionedThroughputExceededException@0.2); repeatable",
    )
    local.add_argument(
        "--delay",
        dest="faults",
        action="append",
        type=_fault("delay"),
        metavar="SERVICE:Operation=SECONDS@RATE",
        help="stall that fraction of those AWS calls that long, then let them through "
        "(e.g. sns:Publish=12@0.05); repeatable",
    )
    local.add_argument(
        "--duplicate-deliveries",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="deliver that fraction of SQS messages to their function a second time, in another "
        "batch, as SQS's at-least-once delivery may (default 0)",
    )
    local.add_argument(
        "--fault-seed",
        type=int,
        default=None,
        metavar="N",
        help="the seed the faults and duplicate deliveries are drawn with (default: a random one, "
        "printed at start)",
    )
    local.add_argument(
        "--auth",
        action="store_true",
        help="turn on the API's JWT authorizer with this pipeline as the issuer (its own key and "
        "JWKS); `orderpipe token` prints tokens for it",
    )
    local.add_argument(
        "--auth-port",
        type=int,
        default=DEFAULT_AUTH_PORT,
        help=f"with --auth, the issuer's port on the API's host (default {DEFAULT_AUTH_PORT}; 0 picks one)",
    )
    local.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)
    local.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to let accepted orders through the pipeline when stopping (default 60)",
    )

    invoke = commands.add_parser(
        "invoke",
        help="invoke one function with an event, like `sam local invoke` without Docker",
        description="Invoke a function of the template with an event, against the resources of a "
        "running `orderpipe local` (else a throwaway endpoint). Prints the response as JSON.",
    )
    invoke.add_argument(
        "function", metavar="FUNCTION", help="logical id (IngestFunction) or short name (ingest)"
    )
    invoke.add_argument("-e", "--event", help="event JSON file, `-` for stdin (default: {})")
    invoke.add_argument(
        "--endpoint-url", help="AWS endpoint whose resources to use (default: the running pipeline's)"
    )
    invoke.add_argument("--env-file", type=Path, help=_ENV_FILE_HELP)
    _add_parameter_overrides(invoke)
    invoke.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)

    requeue = commands.add_parser(
        "requeue",
        help="put what a stop left unfinished back into the running pipeline",
        description="Put a left-over file of `orderpipe local` (written when a stop could not finish "
        "everything) back into the running pipeline: its messages onto their queues, its orders "
        "stored but not announced into their table. Cut short, it can be run again.",
    )
    requeue.add_argument("files", metavar="FILE", type=Path, nargs="+", help="left-over file(s)")
    requeue.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)

    faults = commands.add_parser(
        "faults",
        help="list, add or clear the faults the running pipeline injects",
        description="Change the faults of the running `orderpipe local` (see its --fault and --delay): "
        "`list` shows them with how many calls each hit, `add SPEC...` adds errors "
        "(SERVICE:Operation=ErrorCode@RATE) or delays (SERVICE:Operation=SECONDS@RATE), "
        "`clear` removes them all.",
    )
    faults.add_argument("action", choices=["list", "add", "clear"], nargs="?", default="list")
    faults.add_argument("specs", metavar="SPEC", nargs="*", type=_fault(None), help="faults to add")
    faults.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)

    token = commands.add_parser(
        "token",
        help="print an access token for the running `orderpipe local --auth`",
        description="Print on stdout an access token signed by the running `orderpipe local --auth` "
        "(its issuer and audience), as an OAuth server would issue it: "
        'curl -H "Authorization: Bearer $(orderpipe token --sub ada --scope orders/write)" ...',
    )
    token.add_argument("--sub", required=True, help="the token's subject: the customer it stands for")
    token.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        default=[],
        metavar="SCOPE",
        help="a scope it grants (repeat for more): orders/write, orders/read-all",
    )
    token.add_argument(
        "--expires-in",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME_SECONDS,
        metavar="SECONDS",
        help=f"lifetime (default {DEFAULT_TOKEN_LIFETIME_SECONDS}; negative: already expired)",
    )
    token.add_argument(
        "--audience", help="the audience it names (default the pipeline's: any other is refused)"
    )
    token.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)

    dlq = commands.add_parser(
        "dlq",
        help="what the dead-letter queues hold and why; move it back",
        description="The dead-letter queues of the running `orderpipe local`, or of a deployed stack "
        "with --stack-name: `list` their depth, the age of the oldest message and why each peeked "
        "message failed; `redrive orders` moves OrdersDLQ back to OrdersQueue; `replay notifier` "
        "moves NotifierDLQ back to the retry queue that redrives into it and waits for the replay.",
    )
    dlq_actions = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    dlq_list = dlq_actions.add_parser("list", help="depth, oldest message and failure reasons of every DLQ")
    dlq_list.add_argument(
        "--peek", type=int, default=10, metavar="N", help="messages to peek at per DLQ (at most 10; 0: none)"
    )
    redrive = dlq_actions.add_parser("redrive", help="move OrdersDLQ back to OrdersQueue")
    redrive.add_argument("what", choices=["orders"])
    replay = dlq_actions.add_parser("replay", help="replay NotifierDLQ's failure records now")
    replay.add_argument("what", choices=["notifier"])
    for action in (redrive, replay):
        action.add_argument(
            "--timeout", type=float, default=300.0, help="seconds to move and wait at most (default 300)"
        )
    for action in (dlq_list, redrive, replay):
        _add_stack_arguments(action)

    doctor = commands.add_parser(
        "doctor",
        help="check what an operator checks before a sale",
        description="One line per check, PASS, FAIL or N/A with the detail; exit 1 if any fails: email "
        "subscriptions confirmed, every alarm's state, every DLQ empty, OrdersTable's point-in-time "
        "recovery, its stream with new images, and locally the email rate the outbox refused.",
    )
    _add_stack_arguments(doctor)

    commands.add_parser("openapi", help="print the OpenAPI description of the HTTP API")
    return parser


def _add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack-name",
        help="a deployed stack, found through CloudFormation with the usual AWS credentials and region "
        "(default: the running `orderpipe local`)",
    )
    parser.add_argument(
        "--region", help="the deployed stack's region (default: boto3's, from the environment)"
    )
    parser.add_argument("--state-file", type=Path, help=argparse.SUPPRESS)


def _add_parameter_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        action="extend",  # given twice, both count (a later value of a key wins)
        type=_key_values,
        default=[],
        metavar="KEY=VALUE",
        help="template parameters (over samconfig.toml [default] and the template's defaults)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("local", "invoke"):
        try:
            check_pinned_versions()
        except VersionMismatch as error:
            print(f"orderpipe {args.command}: {error}", file=sys.stderr)
            return 2
    match args.command:
        case "local":
            return _local(args)
        case "invoke":
            return _invoke(args)
        case "requeue":
            return _requeue(args)
        case "faults":
            return _faults(args)
        case "token":
            return _token(args)
        case "dlq":
            return _dlq(args)
        case "doctor":
            return _doctor(args)
        case _:
            from orderpipe.ingest import openapi_json

            print(openapi_json())
            return 0


def _config(args: argparse.Namespace) -> PipelineConfig:
    from orderpipe_local.config import DEFAULT_AWS_PORT, PipelineConfig

    return PipelineConfig(
        root=project_root(),
        api_host=getattr(args, "host", "127.0.0.1"),
        api_port=getattr(args, "port", 3000),
        aws_host=getattr(args, "aws_host", "127.0.0.1"),
        aws_port=DEFAULT_AWS_PORT if getattr(args, "aws_port", None) is None else args.aws_port,
        outbox_dir=getattr(args, "outbox", None),
        parameter_overrides={
            key: value
            for pairs in getattr(args, "parameter_overrides", None) or []
            for key, value in pairs.items()
        },
        env_file=getattr(args, "env_file", None),
        state_file=args.state_file,
        function_log=getattr(args, "log_file", None),
        drain_timeout=getattr(args, "drain_timeout", 60.0),
        workers=getattr(args, "workers", DEFAULT_WORKERS),
        background_nice=getattr(args, "background_nice", DEFAULT_BACKGROUND_NICE),
        unavailable_timeout=getattr(args, "unavailable_timeout", DEFAULT_UNAVAILABLE_TIMEOUT_SECONDS),
        faults=getattr(args, "faults", None) or [],
        duplicate_deliveries=getattr(args, "duplicate_deliveries", 0.0),
        fault_seed=getattr(args, "fault_seed", None),
        auth=getattr(args, "auth", False),
        auth_port=getattr(args, "auth_port", DEFAULT_AUTH_PORT),
    )


def _local(args: argparse.Namespace) -> int:
    from orderpipe_local.console import Console, ConsoleLogHandler
    from orderpipe_local.environment import EnvFileError
    from orderpipe_local.moto.endpoint import EndpointError
    from orderpipe_local.pipeline import LocalPipeline
    from orderpipe_local.state import PipelineState

    console = Console(sys.stdout)
    handler = ConsoleLogHandler(console)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("orderpipe").setLevel(logging.INFO)
    # boto's pool of 10 connections per client overflows under load; that is harmless.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    stop, abort = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            abort.set()  # a second Ctrl-C: stop draining
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    config = _config(args)
    if config.state_file is not None and (running := PipelineState.read(config.state_file)) is not None:
        console.line(f"orderpipe local is already running (pid {running.pid}, API {running.api_url})")
        return 1
    try:
        pipeline = LocalPipeline(config, console)
        pipeline.start()
    except (OSError, EndpointError, TemplateError, EnvFileError) as error:
        console.line(f"orderpipe local: cannot start: {error}")
        return 1
    if not pipeline.run(stop):
        abort.set()  # without the endpoint, or a function that can run, nothing is worth waiting for
        pipeline.stop(abort)
        return 1
    drained = pipeline.stop(abort)
    console.line(
        "orderpipe local: stopped" if drained else "orderpipe local: stopped without draining everything"
    )
    return 0 if drained else 1


def _invoke(args: argparse.Namespace) -> int:
    from orderpipe_local.environment import EnvFileError
    from orderpipe_local.invoke import UnknownFunction, invoke, read_event
    from orderpipe_local.moto.endpoint import EndpointError

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        event = read_event(args.event)
        invocation = invoke(_config(args), args.function, event, endpoint_url=args.endpoint_url)
    except (OSError, ValueError, LookupError, EndpointError, TemplateError, EnvFileError) as error:
        kind = (
            ""
            if isinstance(error, UnknownFunction | EnvFileError | TemplateError)
            else f"{type(error).__name__}: "
        )
        print(f"orderpipe invoke: {kind}{error}", file=sys.stderr)
        return 2
    print(f"invoked {invocation.function_id} against {invocation.against}", file=sys.stderr)
    if invocation.error is not None:
        print(json.dumps(invocation.error_response(), indent=2))
        return 1
    print(json.dumps(invocation.response, indent=2, default=str))
    return 0


def _requeue(args: argparse.Namespace) -> int:
    from orderpipe_local.leftovers import Leftovers, put_back
    from orderpipe_local.stack.template import load_template
    from orderpipe_local.state import PipelineState

    config = _config(args)
    state = PipelineState.read(config.state_file) if config.state_file else None
    if state is None:
        print(
            "orderpipe requeue: no orderpipe local is running here: start it (make run) first",
            file=sys.stderr,
        )
        return 1
    try:
        leftovers = [(path, Leftovers.read(path)) for path in args.files]
    except (OSError, ValueError) as error:
        print(f"orderpipe requeue: {error}", file=sys.stderr)
        return 2
    template = load_template(
        config.root / "template.yaml", overrides=state.parameters, stack_name=state.stack_name
    )
    stack = state.stack(template)
    unknown = {name for _, kept in leftovers for name in (*kept.messages, *kept.items)} - set(stack.resources)
    if unknown:
        print(f"orderpipe requeue: the running pipeline has no {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    for path, kept in leftovers:
        print(f"{path}: {kept.summary() or 'nothing left'}")
        put_back(kept, stack, path, progress=lambda line: print(f"  {line}"))
    return 0


def _faults(args: argparse.Namespace) -> int:
    from orderpipe_local.moto.faults import FaultError, add_faults, clear_faults, read_faults
    from orderpipe_local.state import PipelineState

    config = _config(args)
    state = PipelineState.read(config.state_file) if config.state_file else None
    if state is None:
        print(
            "orderpipe faults: no orderpipe local is running here: start it (make run) first", file=sys.stderr
        )
        return 1
    if args.action == "add" and not args.specs:
        print("orderpipe faults add: give at least one SPEC", file=sys.stderr)
        return 2
    if args.action != "add" and args.specs:
        print(f"orderpipe faults {args.action}: takes no SPEC", file=sys.stderr)
        return 2
    try:
        match args.action:
            case "add":
                current = add_faults(state.endpoint_url, args.specs)
            case "clear":
                current = clear_faults(state.endpoint_url)
            case _:
                current = read_faults(state.endpoint_url)
    except (OSError, FaultError) as error:
        print(f"orderpipe faults: {error}", file=sys.stderr)
        return 1
    injected: dict[str, int] = current["injected"]
    for spec in current["faults"]:
        print(f"{spec}  ({injected.get(spec, 0)} injected)")
    if not current["faults"]:
        print("no faults")
    cleared = {spec: count for spec, count in injected.items() if spec not in current["faults"]}
    if cleared:
        print("cleared: " + ", ".join(f"{spec} ({count} injected)" for spec, count in cleared.items()))
    print(f"seed {current['seed']}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from orderpipe_local.issuer import issue_token, read_key
    from orderpipe_local.state import PipelineState

    config = _config(args)
    state = PipelineState.read(config.state_file) if config.state_file else None
    if state is None:
        print("orderpipe token: no orderpipe local is running here: start it with --auth", file=sys.stderr)
        return 1
    if state.auth is None:
        print(
            f"orderpipe token: the orderpipe local running here (pid {state.pid}) has no issuer:"
            " restart it with --auth",
            file=sys.stderr,
        )
        return 1
    try:
        key = read_key(Path(state.auth["key_file"]))
    except (OSError, ValueError) as error:
        print(f"orderpipe token: cannot read the issuer's key: {error}", file=sys.stderr)
        return 1
    print(
        issue_token(
            key,
            issuer=state.auth["issuer"],
            audience=args.audience or state.auth["audience"],
            subject=args.sub,
            scopes=args.scopes,
            expires_in=args.expires_in,
        )
    )
    return 0


def _operated_stack(args: argparse.Namespace, command: str) -> OperatedStack | None:
    from botocore.exceptions import BotoCoreError, ClientError

    from orderpipe_local.operate.stack import StackNotFound, deployed_stack, local_stack

    try:
        if args.stack_name:
            return deployed_stack(args.stack_name, args.region)
        config = _config(args)
        assert config.state_file is not None
        return local_stack(config.root, config.state_file)
    except (StackNotFound, TemplateError, BotoCoreError, ClientError) as error:
        print(f"orderpipe {command}: {error}", file=sys.stderr)
        return None


def _dlq(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from orderpipe_local.operate import dlq

    command = f"dlq {args.dlq_action}"
    stack = _operated_stack(args, command)
    if stack is None:
        return 1
    try:
        match args.dlq_action:
            case "list":
                for line in dlq.format_reports(dlq.list_dlqs(stack, args.peek)):
                    print(line)
                return 0
            case "redrive":
                moved = dlq.redrive_orders(stack, timeout=args.timeout)
                print(moved.summary())
                if moved.order_ids:
                    print("orders: " + ", ".join(moved.order_ids))
                return 1 if moved.interrupted else 0
            case _:
                replayed = dlq.replay_notifier(stack, timeout=args.timeout)
                print(
                    f"after {replayed.waited:.0f} s: {replayed.replayed} replayed, "
                    f"{replayed.still_in_retry_queue} still in {replayed.retry_queue}, "
                    f"{replayed.back_in_dlq} in {replayed.move.source}"
                )
                failed = replayed.move.interrupted or replayed.still_in_retry_queue or replayed.back_in_dlq
                return 1 if failed else 0
    except dlq.DlqError as error:
        print(f"orderpipe {command}: {error}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as error:
        print(f"orderpipe {command}: {error}", file=sys.stderr)
        return 1


def _doctor(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from orderpipe_local.operate.doctor import run_checks

    stack = _operated_stack(args, "doctor")
    if stack is None:
        return 1
    try:
        checks = run_checks(stack)
    except (BotoCoreError, ClientError) as error:
        print(f"orderpipe doctor: {error}", file=sys.stderr)
        return 1
    print(f"orderpipe doctor: {stack.where}")
    for check in checks:
        print(check.line())
    return 1 if any(check.failed for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
