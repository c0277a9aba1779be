"""The template's Lambda functions, invoked with a Lambda context: in this process
(`LocalFunction`), or in execution environments of their own (`ProcessPoolFunction`)."""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, Protocol, TextIO

from orderpipe.aws import clients
from orderpipe_local.runtime.gc_pauses import freeze_survivors
from orderpipe_local.runtime.handlers import Handler, load_handler
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack


class FunctionState(StrEnum):
    OK = "ok"  # every execution environment is up
    DEGRADED = "degraded"  # some are being replaced; invocations wait for one
    UNAVAILABLE = "unavailable"  # none is up and none could be started: invocations fail at once


@dataclass(frozen=True)
class FunctionHealth:
    """A function's execution environments, for the status line."""

    function_id: str
    state: FunctionState
    alive: int  # environments up (idle or invoked)
    environments: int  # environments it should have
    replaced: int = 0  # environments started in place of ended ones
    unavailable_seconds: float = 0.0  # how long it has been unavailable
    detail: str = ""  # why the last environment could not start

    @property
    def name(self) -> str:
        """The name its logs go under: `WriterFunction` -> `writer`."""
        return self.function_id.removesuffix("Function").lower() or self.function_id

    def summary(self) -> str:
        """`writer 4/4`, `writer 3/4 degraded (2 replaced)`, `writer 0/4 unavailable`."""
        text = f"{self.name} {self.alive}/{self.environments}"
        if self.state is not FunctionState.OK:
            text += f" {self.state}"
        if self.replaced:
            text += f" ({self.replaced} replaced)"
        return text


@dataclass
class LocalFunction:
    """One function of the template: its handler, timeout and memory, invoked like Lambda does.

    The handler is loaded from `code_dir` when first invoked (or by `load()`): a process that
    only starts workers for it never imports it, so each worker imports it in its own
    environment (`environment`: the function's variables).
    """

    function_id: str
    handler: Handler | None
    timeout_seconds: float
    memory_mb: int
    invocations: int = 0
    errors: int = 0
    code_dir: Path | None = None
    handler_name: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    _environment: threading.Lock = field(default_factory=threading.Lock, repr=False)
    concurrency = 1  # one execution environment
    available = True  # it runs in the caller's process

    def load(self) -> Handler:
        if self.handler is None:
            if self.code_dir is None:
                raise FunctionError(f"{self.function_id}: no code to load")
            self.handler = load_handler(self.code_dir, self.handler_name, f"{self.function_id}_app")
        return self.handler

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler. An exception it raises is a function error and propagates.

        One invocation at a time, as in one warm Lambda execution environment: the handler's
        module state (Powertools' resolver, logger and metrics) belongs to one request at a time,
        and concurrent calls in threads answered each other's requests.
        """
        context = LocalLambdaContext(
            function_name=self.function_id,
            timeout_seconds=self.timeout_seconds,
            memory_limit_in_mb=self.memory_mb,
        )
        with self._environment:
            handler = self.load()
            self.invocations += 1
            try:
                # Its own copy, as Lambda's payload is: the caller may invoke with it again.
                return handler(copy.deepcopy(event), context)
            except Exception:
                self.errors += 1
                raise
            except (SystemExit, GeneratorExit) as exit_:  # a function error too, not this thread's end
                self.errors += 1
                raise FunctionError(f"{self.function_id} exited: {exit_!r}") from exit_

    def health(self) -> FunctionHealth:
        return FunctionHealth(self.function_id, FunctionState.OK, alive=1, environments=1)


def load_functions(
    stack: Stack, root: Path, environments: Mapping[str, dict[str, str]] | None = None
) -> dict[str, LocalFunction]:
    """Every AWS::Lambda::Function of the template, its code in its CodeUri (loaded when first
    invoked); `environments`: each function's variables, by function id."""
    functions = {}
    for function_id, resource in stack.functions().items():
        properties = resource["Properties"]
        functions[function_id] = LocalFunction(
            function_id=function_id,
            handler=None,
            timeout_seconds=float(stack.resolve(properties.get("Timeout", 3))),
            memory_mb=int(stack.resolve(properties.get("MemorySize", 128))),
            code_dir=root / stack.template.source_code_uris[function_id],
            handler_name=properties["Handler"],
            environment=dict((environments or {}).get(function_id, {})),
        )
    return functions


class Invocable(Protocol):
    """What the HTTP API and the event sources need of a function: invoke it with an event."""

    function_id: str
    invocations: int
    errors: int
    concurrency: int  # invocations it runs at once: its execution environments

    @property
    def available(self) -> bool:
        """False while invocations would fail with FunctionUnavailable."""

    def invoke(self, event: dict[str, Any]) -> Any: ...

    def health(self) -> FunctionHealth: ...


class FunctionError(Exception):
    """The handler raised in a worker process; the message carries its traceback."""


class FunctionUnavailable(FunctionError):
    """The function was not invoked: none of its execution environments is up, and none could be
    started. Not the handler's failure: the event may be retried once the function is back."""


# --- execution environments in worker processes ----------------------------------------------

WORKER_LOAD_TIMEOUT_SECONDS = 60.0
# A function left without any environment, whose environments failed to start this many times in
# a row, is unavailable: its invocations fail at once instead of waiting.
STARTS_FAILED_BEFORE_UNAVAILABLE = 3
# Failed starts are retried after 0.5 s, 1 s, 2 s, 4 s, then every RETRY_START_SECONDS.
FIRST_RETRY_SECONDS = 0.5
RETRY_START_SECONDS = 5.0
_JOIN_SECONDS = 5.0

# What every execution environment imports, imported once by the forkserver so that a new
# environment, forked from it, starts with it in memory (a replacement is ready in about 0.1 s
# instead of 3-4 s: see ProcessPoolFunction). Only modules that read nothing of a
# function's environment when imported: `orderpipe.observability` builds Powertools' Logger
# (service name, bound to sys.stdout) and Metrics (namespace, stage) from it, so it, the
# modules that import it and the handlers load in each environment.
PRELOADED_MODULES = [
    "__main__",  # as the standard library preloads it: a child need not import it again
    "boto3",
    "pydantic",
    "aws_xray_sdk.core",
    "aws_lambda_powertools",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.event_handler.openapi.params",
    "aws_lambda_powertools.logging.correlation_paths",
    "aws_lambda_powertools.utilities.batch",
    "aws_lambda_powertools.utilities.idempotency",
    "aws_lambda_powertools.utilities.idempotency.serialization.pydantic",
    "aws_lambda_powertools.utilities.parser.models",
    "aws_lambda_powertools.utilities.typing",
    "orderpipe.aws.clients",
    "orderpipe.models",
    "orderpipe.support_email",
    "orderpipe_local.runtime.functions",
]

log = logging.getLogger(__name__)

# Process.start() polls every child of this process, and Process.close() closes the descriptor it
# polls: the two never run at once.
_process_lifecycle = threading.Lock()
# Environments not ended yet, ended at exit (see _end_environments_at_exit).
_open_environments: set[_Environment] = set()


@atexit.register
def _end_environments_at_exit() -> None:
    """At exit, before multiprocessing joins its children: a pool that was never stopped has
    workers that ignore SIGTERM, which multiprocessing would wait for."""
    for environment in list(_open_environments):
        environment.end(join=False)


def start_forkserver() -> None:
    """Start the forkserver now, importing PRELOADED_MODULES in its own process while this one
    does other things; the first pool would start it otherwise, and wait for its imports."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOADED_MODULES)
    multiprocessing.forkserver.ensure_running()


class _InheritedStream:
    """This process's standard output, handed to a worker as a descriptor of the same open
    file: the function log, where the pipeline and its workers write, interleaved, as if forked."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __reduce__(self) -> tuple[Any, ...]:
        # Called while Process.start() pickles the worker's arguments, when DupFd can pass a
        # descriptor to the forkserver along with them.
        return _open_inherited_stream, (reduction.DupFd(self.stream.fileno()), self.stream.encoding)


def _open_inherited_stream(descriptor: Any, encoding: str) -> TextIO:
    return open(descriptor.detach(), "w", encoding=encoding)


@dataclass(frozen=True)
class EnvironmentSpec:
    """What a worker needs to become an execution environment of a function: small and
    picklable, as it travels to a process forked from the forkserver."""

    function_id: str
    code_dir: Path
    handler_name: str
    timeout_seconds: float
    memory_mb: int
    # The whole environment: the forkserver's is this process's when it started, not now.
    environment: dict[str, str]
    nice: int
    stdout: Any  # an _InheritedStream here, the open file in the worker; None: the forkserver's


def environment_process_name(function_id: str) -> str:
    """`WriterFunction` -> `writer-env`: an execution environment's process name."""
    return f"{function_id.removesuffix('Function').lower()}-env"[:15]


def _serve_invocations(connection: Connection, spec: EnvironmentSpec) -> None:
    """A worker process: load the handler, say so, then invoke it with each event received
    until told to stop (None) or the pipeline goes away (its pipe closes)."""
    # The pipeline coordinates shutdown: Ctrl-C and SIGTERM are its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Named for ps and top (`writer-env`), and for tests that kill one: Linux's 15-character comm.
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(environment_process_name(spec.function_id))
    try:
        os.nice(spec.nice)
        handler = _become_environment(spec)
    except BaseException:
        with contextlib.suppress(OSError):
            connection.send((False, traceback.format_exc()))
        raise SystemExit(1) from None
    connection.send((True, os.getpid()))
    while True:
        try:
            event = connection.recv()
        except (EOFError, OSError):
            return
        if event is None:
            return
        answer = _invoke_in_environment(handler, spec, event)
        try:
            payload = ForkingPickler.dumps(answer)
        except Exception:  # a response that cannot be pickled back: a function error
            payload = ForkingPickler.dumps((False, traceback.format_exc()))
        try:
            connection.send_bytes(payload)
        except OSError:  # the pipeline is gone
            return


def _become_environment(spec: EnvironmentSpec) -> Handler:
    """The function's variables, its output to the function log, boto3 clients of its own (a
    cached one may come from a module the forkserver preloaded), then its handler."""
    os.environ.clear()
    os.environ.update(spec.environment)
    if spec.stdout is not None:
        sys.stdout = spec.stdout
        # Powertools warns through `warnings`: function output too, as in the pipeline's process.
        warnings.showwarning = _warning_to_function_log
    clients.reset()
    handler = load_handler(spec.code_dir, spec.handler_name, f"{spec.function_id}_app")
    freeze_survivors()
    return handler


def _warning_to_function_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    sys.stdout.write(warnings.formatwarning(message, category, filename, lineno, line))


def _invoke_in_environment(
    handler: Handler, spec: EnvironmentSpec, event: dict[str, Any]
) -> tuple[bool, Any]:
    """(True, result), or (False, the traceback) when the handler raised: an exception may not
    pickle, its text always does."""
    context = LocalLambdaContext(
        function_name=spec.function_id,
        timeout_seconds=spec.timeout_seconds,
        memory_limit_in_mb=spec.memory_mb,
    )
    try:
        return True, handler(event, context)
    except BaseException:  # sys.exit() too: a function error (this environment goes on)
        return False, traceback.format_exc()
    finally:
        # The function log is a file shared with the pipeline: write this invocation's lines out.
        sys.stdout.flush()


@dataclass(eq=False)
class _Environment:
    """One execution environment: a worker process and the pipeline's end of its pipe."""

    process: BaseProcess
    pid: int
    connection: Connection
    started: float  # time.monotonic() when it was started
    replacement: bool  # started in place of one that ended
    # Its process's end was told while it was invoked: it is retired when the invocation is over.
    exit_told: bool = False
    _ended: bool = False
    _ending: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def end(self, *, join: bool = True) -> None:
        """SIGKILL it, close its pipe and reap it; once, whichever threads ask."""
        with self._ending:
            if self._ended:
                return
            self._ended = True
            _open_environments.discard(self)
            with contextlib.suppress(OSError, ValueError):
                self.process.kill()  # does nothing once its exit is known
                if self.process.exitcode is not None and not self.connection.poll(0):
                    # Its exit was told (the forkserver that forked it went away, and told
                    # 255), yet it holds its pipe open: it lives, and its pid is still its own.
                    os.kill(self.pid, signal.SIGKILL)
            self.connection.close()  # an idle worker whose kill did nothing exits at EOF
            if not join:
                return
            self.process.join(_JOIN_SECONDS)
            if self.process.exitcode is not None:
                with _process_lifecycle:
                    self.process.close()


class ProcessPoolFunction:
    """A function run in `workers` execution environments, each a worker process that handles
    one invocation at a time, so that invocations run in parallel without sharing the
    handler's module state. An invocation takes a free environment and talks to it over its own
    pipe: no thread of this process stands between the caller and the worker.

    The workers are forked by the standard library's forkserver (one per pipeline process): a
    process started clean, with the modules every environment needs already imported
    (PRELOADED_MODULES), and no thread, so a worker can be started at any time, from any
    thread. An environment killed while idle is replaced and ready (handler loaded) 0.06-0.13 s
    later (medians of 7 kills for each function, range 0.04-0.18 s), against 3.0-4.4 s (range
    2.1-5.5 s) with the forkserver preloading only `__main__`: measured on the 2-core machine,
    2026-12-02, at a load average of 5-7.

    As in Lambda, an invocation that runs over the function's timeout fails ("Task timed out")
    and its environment is ended. An environment that ends, timed out, crashed or killed while
    idle, is replaced by a new one promptly: a watcher thread waits on the processes'
    sentinels. If the forkserver itself goes away, the environments it forked are retired and
    replaced from a new one. If no environment is left and STARTS_FAILED_BEFORE_UNAVAILABLE starts
    in a row fail, the function is unavailable: invocations raise FunctionUnavailable at once,
    and starts are retried every RETRY_START_SECONDS until one succeeds.
    """

    def __init__(self, function: LocalFunction, workers: int, *, nice: int = 0) -> None:
        """`nice`: the workers' niceness (see PipelineConfig.background_nice). Returns once
        every worker has loaded the handler; one that cannot fails the pool."""
        if function.code_dir is None or not function.handler_name:
            raise ValueError(f"{function.function_id}: no code to load in a worker")
        self.function_id = function.function_id
        self.name = f"{function.function_id} workers"
        self.workers = self.concurrency = workers
        self.invocations = 0
        self.errors = 0
        self.replaced = 0
        self.timeout_seconds = function.timeout_seconds
        self.last_start_seconds = 0.0  # how long the last environment took to load
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOADED_MODULES)
        self._spec = EnvironmentSpec(
            function_id=function.function_id,
            code_dir=function.code_dir,
            handler_name=function.handler_name,
            timeout_seconds=function.timeout_seconds,
            memory_mb=function.memory_mb,
            environment=dict(os.environ) | function.environment,
            nice=nice,
            stdout=_InheritedStream(sys.stdout) if _has_descriptor(sys.stdout) else None,
        )
        self._changed = threading.Condition()
        self._environments: set[_Environment] = set()  # up: free or invoked
        self._free: list[_Environment] = []
        self._loading: list[_Environment] = []
        self._invoked = 0
        self._stopping = False
        self._failed_starts = 0  # in a row
        self._last_failure = ""
        self._next_start = 0.0
        self._unavailable_since: float | None = None
        self._wakeup, self._wake_watcher = os.pipe()
        os.set_blocking(self._wake_watcher, False)
        self._watcher: threading.Thread | None = None
        self._closed = False
        self._start_first(workers)
        self._watcher = threading.Thread(target=self._watch, name=f"{self.name} watcher", daemon=True)
        self._watcher.start()

    def _start_first(self, workers: int) -> None:
        try:
            for _ in range(workers):
                self._loading.append(self._start_environment(replacement=False))
        except Exception as error:
            self.kill()
            raise FunctionError(f"{self.function_id}: a worker could not be started: {error!r}") from error
        deadline = time.monotonic() + WORKER_LOAD_TIMEOUT_SECONDS
        for environment in list(self._loading):
            loaded, detail = _loaded(environment, max(0.0, deadline - time.monotonic()))
            if not loaded:
                self.kill()
                raise FunctionError(f"{self.function_id}: a worker could not load the handler:\n{detail}")
            self._loading.remove(environment)
            self._environments.add(environment)
            self._free.append(environment)
            self.last_start_seconds = time.monotonic() - environment.started

    def _start_environment(self, *, replacement: bool) -> _Environment:
        pipeline_end, worker_end = self._context.Pipe()
        process = self._context.Process(
            target=_serve_invocations,
            args=(worker_end, self._spec),
            name=f"{self.function_id} environment",
            daemon=True,
        )
        try:
            with _process_lifecycle:
                process.start()
        except BaseException:
            pipeline_end.close()
            raise
        finally:
            worker_end.close()  # the worker holds the other end alone: its exit reads as EOF
        assert process.pid is not None
        environment = _Environment(process, process.pid, pipeline_end, time.monotonic(), replacement)
        _open_environments.add(environment)
        return environment

    # --- invoking ------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        with self._changed:
            return self._unavailable_since is None

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler in a free environment (waiting for one). An exception it raises, its
        timeout, or its environment's death is a FunctionError; no environment to be had,
        FunctionUnavailable."""
        try:
            payload = ForkingPickler.dumps(event)
        except Exception as error:
            raise FunctionError(f"{self.function_id}: the event cannot be sent: {error!r}") from error
        environment = self._take()
        try:
            ok, result = self._call(environment, payload)
        finally:
            self._give_back(environment)
        if not ok:
            with self._changed:
                self.errors += 1
            raise FunctionError(result)
        return result

    def _take(self) -> _Environment:
        with self._changed:
            while not self._free:
                if self._stopping:
                    raise FunctionError(f"{self.function_id}: stopped")
                if self._unavailable_since is not None:
                    raise FunctionUnavailable(self._unavailable_reason())
                self._changed.wait()
            if self._stopping:
                raise FunctionError(f"{self.function_id}: stopped")
            self.invocations += 1
            self._invoked += 1
            return self._free.pop()

    def _give_back(self, environment: _Environment) -> None:
        retire = False
        with self._changed:
            self._invoked -= 1
            if environment in self._environments:  # not ended with its invocation, nor by kill()
                if environment.exit_told:
                    self._environments.discard(environment)
                    self._update_state()
                    retire = True
                else:
                    self._free.append(environment)
            self._changed.notify_all()
        if retire:
            environment.end()
            self._wake()

    def _call(self, environment: _Environment, payload: memoryview) -> tuple[bool, Any]:
        try:
            environment.connection.send_bytes(payload)
            if not environment.connection.poll(self.timeout_seconds):
                self._end(environment)
                return False, f"{self.function_id}: Task timed out after {self.timeout_seconds:.2f} seconds"
            answer: tuple[bool, Any] = environment.connection.recv()
        except (EOFError, OSError) as error:  # the worker died or was killed: a function error
            self._end(environment)
            return False, f"{self.function_id}: its worker (pid {environment.pid}) died: {error!r}"
        ok, result = answer
        return ok, result if ok else f"{self.function_id} raised:\n{result}"

    def _end(self, environment: _Environment) -> None:
        """End an environment whose invocation failed with it; the watcher starts another."""
        with self._changed:
            self._environments.discard(environment)
            self._update_state()
        environment.end()
        self._wake()  # after end(): it closed descriptors the watcher may be waiting on

    # --- health --------------------------------------------------------------------------------

    def health(self) -> FunctionHealth:
        with self._changed:
            since = self._unavailable_since
            return FunctionHealth(
                self.function_id,
                self._state(),
                alive=len(self._environments),
                environments=self.workers,
                replaced=self.replaced,
                unavailable_seconds=0.0 if since is None else time.monotonic() - since,
                detail=self._last_failure,
            )

    def _state(self) -> FunctionState:
        if len(self._environments) >= self.workers:
            return FunctionState.OK
        if not self._environments and self._failed_starts >= STARTS_FAILED_BEFORE_UNAVAILABLE:
            return FunctionState.UNAVAILABLE
        return FunctionState.DEGRADED

    def _update_state(self) -> None:
        """After the environments or the failed starts changed (the lock held): note when the
        function became unavailable, or available again, and let waiting invocations know."""
        unavailable = self._state() is FunctionState.UNAVAILABLE
        if unavailable and self._unavailable_since is None and not self._stopping:
            self._unavailable_since = time.monotonic()
            log.error("%s", self._unavailable_reason())
            self._changed.notify_all()
        elif not unavailable and self._unavailable_since is not None:
            self._unavailable_since = None
            log.warning("%s is available again", self.function_id)

    def _unavailable_reason(self) -> str:
        last = self._last_failure.strip().splitlines()[-1:] or ["?"]
        return (
            f"{self.function_id} is unavailable: none of its execution environments is up and "
            f"{self._failed_starts} starts in a row failed (the last: {last[0]})"
        )

    # --- the watcher ---------------------------------------------------------------------------

    def _watch(self) -> None:
        """Replace what ends while idle or loads no handler, and start what is missing."""
        while True:
            with self._changed:
                if self._stopping:
                    return
                starts = self._starts_due()
                # Invoked ones too: one invoked when the set was made may be idle when it ends.
                # (Whoever ends one closes its sentinel, then wakes this thread.)
                up = {
                    environment.process.sentinel: environment
                    for environment in self._environments
                    if not environment.exit_told
                }
                loading = {environment.connection: environment for environment in self._loading}
                timeout = self._next_wake()
            if starts:
                self._start_replacements(starts)
                continue
            ready = multiprocessing.connection.wait([self._wakeup, *up, *loading], timeout)
            if self._wakeup in ready:
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wakeup, 4096)
            ended: list[_Environment] = []
            with self._changed:
                for key in ready:
                    if key in up:
                        self._exit_told(up[key], ended)
                    elif isinstance(key, Connection) and loading.get(key) in self._loading:
                        self._settle(loading[key], ended)
                self._settle_overdue(ended)
                self._update_state()
                self._changed.notify_all()
            for environment in ended:
                environment.end()

    def _starts_due(self) -> int:
        missing = self.workers - len(self._environments) - len(self._loading)
        if missing <= 0 or time.monotonic() < self._next_start:
            return 0
        if self._failed_starts:  # one at a time until one starts
            return 0 if self._loading else 1
        return missing

    def _next_wake(self) -> float | None:
        now = time.monotonic()
        wakes = [environment.started + WORKER_LOAD_TIMEOUT_SECONDS - now for environment in self._loading]
        if self.workers > len(self._environments) + len(self._loading):
            wakes.append(self._next_start - now)
        return max(0.0, min(wakes)) if wakes else None

    def _start_replacements(self, count: int) -> None:
        for _ in range(count):
            try:
                environment = self._start_environment(replacement=True)
            except Exception as error:  # no process to be had, or the forkserver went away
                with self._changed:
                    self._start_failed(f"the worker could not be started: {error!r}")
                    self._update_state()
                return
            with self._changed:
                stopping = self._stopping
                if not stopping:
                    self._loading.append(environment)
            if stopping:
                environment.end()
                return

    def _exit_told(self, environment: _Environment, ended: list[_Environment]) -> None:
        """An environment's sentinel: its process ended, or the forkserver that forked it did
        (which tells every child's end). Either way it is retired and replaced: the idle one
        now, an invoked one when its invocation is over."""
        if environment not in self._free:
            if environment in self._environments:
                environment.exit_told = True
            return
        self._free.remove(environment)
        self._environments.discard(environment)
        ended.append(environment)
        connection = environment.connection
        if connection.closed or connection.poll(0):  # EOF: the worker is gone
            log.warning(
                "%s: an idle execution environment (pid %s) ended; starting another",
                self.function_id,
                environment.pid,
            )
        else:
            log.warning(
                "%s: the forkserver went away; replacing the environment it forked (pid %s)",
                self.function_id,
                environment.pid,
            )

    def _settle(self, environment: _Environment, ended: list[_Environment]) -> None:
        """A loading environment spoke (or ended): up, or a failed start."""
        self._loading.remove(environment)
        try:
            loaded, detail = environment.connection.recv()
        except (EOFError, OSError):
            loaded, detail = False, "the worker exited while loading"
        if not loaded or self._stopping:
            self._start_failed(str(detail))
            ended.append(environment)
            return
        self._failed_starts = 0
        self.replaced += environment.replacement
        self.last_start_seconds = time.monotonic() - environment.started
        self._environments.add(environment)
        self._free.append(environment)

    def _settle_overdue(self, ended: list[_Environment]) -> None:
        now = time.monotonic()
        for environment in list(self._loading):
            if now - environment.started >= WORKER_LOAD_TIMEOUT_SECONDS:
                self._loading.remove(environment)
                self._start_failed(f"the worker did not load within {WORKER_LOAD_TIMEOUT_SECONDS:.0f} s")
                ended.append(environment)

    def _start_failed(self, detail: str) -> None:
        if self._stopping:
            return
        self._failed_starts += 1
        self._last_failure = detail
        delay = min(RETRY_START_SECONDS, FIRST_RETRY_SECONDS * 2 ** (self._failed_starts - 1))
        self._next_start = time.monotonic() + delay
        log.error(
            "%s: an execution environment could not start (%d in a row; next try in %.1f s): %s",
            self.function_id,
            self._failed_starts,
            delay,
            detail,
        )

    def _wake(self) -> None:
        with self._changed, contextlib.suppress(BlockingIOError, OSError):
            if not self._closed:  # once closed, the descriptor's number may be another file's
                os.write(self._wake_watcher, b"!")

    # --- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Let the invocations in flight finish, then end the environments."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()  # those waiting for an environment are refused
            self._changed.wait_for(lambda: self._invoked == 0)
        self._stop_watcher()
        with self._changed:
            environments, loading = list(self._environments), list(self._loading)
            self._environments.clear()
            self._free.clear()
            self._loading.clear()
        for environment in environments:
            with contextlib.suppress(OSError):
                environment.connection.send(None)
        for environment in environments:
            environment.process.join(_JOIN_SECONDS)
        for environment in [*environments, *loading]:
            environment.end()
        self._close()

    def kill(self) -> None:
        """End the environments at once (their invocations are stuck), and reap them."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            environments = [*self._environments, *self._loading]
            self._environments.clear()
            self._free.clear()
            self._loading.clear()
        for environment in environments:
            environment.end()
        self._stop_watcher()
        self._close()

    def _stop_watcher(self) -> None:
        self._wake()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(WORKER_LOAD_TIMEOUT_SECONDS)

    def _close(self) -> None:
        with self._changed:
            if self._closed or (self._watcher is not None and self._watcher.is_alive()):
                return  # (a watcher still starting a process may yet wake itself)
            self._closed = True
        os.close(self._wakeup)
        os.close(self._wake_watcher)


def _loaded(environment: _Environment, timeout: float) -> tuple[bool, str]:
    try:
        if not environment.connection.poll(timeout):
            return False, f"the worker did not load within {WORKER_LOAD_TIMEOUT_SECONDS:.0f} s"
        loaded, detail = environment.connection.recv()
        return bool(loaded), str(detail)
    except (EOFError, OSError):
        return False, "the worker exited while loading"


def _has_descriptor(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


class Poller(Protocol):
    """An event source mapping played locally: polls a source, invokes a function."""

    name: str

    def start(self) -> None:
        """Start polling in background thread(s)."""

    def stop(self) -> None:
        """Stop polling, let the batch in flight finish (and its result be applied), then return."""

    def stats(self) -> dict[str, int]:
        """Counters for the console status line (batches, records, failures...)."""
