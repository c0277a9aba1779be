"""The template's Lambda functions, run in-process with a Lambda context."""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, Protocol

from orderpipe import resources
from orderpipe.lambda_context import LocalLambdaContext
from orderpipe.local.gc_pauses import freeze_survivors
from orderpipe.stack.functions import Handler, load_handler
from orderpipe.stack.provision import Stack


@dataclass
class LocalFunction:
    """One function of the template: its handler, timeout and memory, invoked like Lambda does.

    The handler is loaded from `code_dir` when first invoked (or by `load()`): a process that
    only forks workers for it never imports it, so each worker imports it in its own
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
    """What the HTTP API and the SQS event source need of a function: invoke it with an event."""

    function_id: str
    invocations: int
    errors: int
    concurrency: int  # invocations it runs at once: its execution environments

    def invoke(self, event: dict[str, Any]) -> Any: ...


class FunctionError(Exception):
    """The handler raised in a worker process; the message carries its traceback."""


# The handler of a worker process (one per process, loaded when it starts).
_worker_handler: Handler | None = None
# This process's ends of its workers' pipes, its own worker's among them: a worker closes those
# it inherits, so that its pipe's other end is held by the pipeline alone, and the worker sees
# EOF (and exits) when the pipeline goes, however it goes.
_pipeline_ends: list[Connection] = []


def _init_worker(function: LocalFunction) -> None:
    """A new execution environment, with the function's own variables: the parent coordinates
    shutdown, so the worker ignores Ctrl-C and SIGTERM; boto3 clients must not cross a fork,
    so they are built anew."""
    global _worker_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for inherited in _pipeline_ends:
        inherited.close()
    os.environ.update(function.environment)
    resources.reset()
    assert function.code_dir is not None
    _worker_handler = load_handler(function.code_dir, function.handler_name, f"{function.function_id}_app")
    freeze_survivors()


def _invoke_in_worker(
    function_id: str, timeout_seconds: float, memory_mb: int, event: dict[str, Any]
) -> tuple[bool, Any]:
    """(True, result), or (False, the traceback) when the handler raised: an exception may not
    pickle, its text always does."""
    assert _worker_handler is not None
    context = LocalLambdaContext(
        function_name=function_id, timeout_seconds=timeout_seconds, memory_limit_in_mb=memory_mb
    )
    try:
        return True, _worker_handler(event, context)
    except BaseException:  # sys.exit() too: a function error (this environment goes on)
        return False, traceback.format_exc()
    finally:
        # The function log is a file shared with the parent: write this invocation's lines out.
        sys.stdout.flush()


def _serve_invocations(connection: Connection, function: LocalFunction, nice: int) -> None:
    """A worker process: load the handler, say so, then invoke it with each event received
    until told to stop (None) or the pipeline goes away."""
    try:
        os.nice(nice)
        _init_worker(function)
    except BaseException:
        connection.send((False, traceback.format_exc()))
        raise
    connection.send((True, os.getpid()))
    while True:
        try:
            event = connection.recv()
        except EOFError:
            return
        if event is None:
            return
        answer = _invoke_in_worker(function.function_id, function.timeout_seconds, function.memory_mb, event)
        try:
            payload = ForkingPickler.dumps(answer)
        except Exception:  # a response that cannot be pickled back: a function error
            payload = ForkingPickler.dumps((False, traceback.format_exc()))
        connection.send_bytes(payload)


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection  # the pipeline's end of the worker's pipe
    alive: bool = True


class ProcessPoolFunction:
    """A function run in `workers` execution environments, each a forked process that handles
    one invocation at a time, so that invocations run in parallel without sharing the
    handler's module state. An invocation takes a free worker and talks to it over its own
    pipe: no thread of this process stands between the caller and the worker.

    Create it before any thread of this process starts (forking a process with running threads
    is unsafe): the workers are forked at once, here, and loaded before it returns.
    """

    def __init__(self, function: LocalFunction, workers: int, *, nice: int = 0) -> None:
        """`nice`: the workers' niceness (see PipelineConfig.background_nice)."""
        if function.code_dir is None or not function.handler_name:
            raise ValueError(f"{function.function_id}: no code to load in a worker")
        self.function_id = function.function_id
        self.name = f"{function.function_id} workers"
        self.workers = self.concurrency = workers
        self.invocations = 0
        self.errors = 0
        self._free: list[_Worker] = []
        self._free_changed = threading.Condition()
        self._stopping = False
        sys.stdout.flush()  # what is buffered would be written again by every worker
        sys.stderr.flush()
        context = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []
        for _ in range(workers):
            pipeline_end, worker_end = context.Pipe()
            _pipeline_ends.append(pipeline_end)  # before the fork: the worker closes its copy
            process = context.Process(
                target=_serve_invocations,
                args=(worker_end, function, nice),
                name=f"{function.function_id} worker",
                daemon=True,
            )
            process.start()
            worker_end.close()
            self._workers.append(_Worker(process, pipeline_end))
        for worker in self._workers:  # a worker that fails to load fails the pipeline's start
            try:
                loaded, detail = worker.connection.recv()
            except EOFError:
                loaded, detail = False, "the worker exited while loading"
            if not loaded:
                self.kill()
                raise FunctionError(f"{self.function_id}: a worker could not load the handler:\n{detail}")
            self._free.append(worker)

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler in a free worker (waiting for one). An exception it raises, or the
        worker's death, is a FunctionError."""
        worker = self._take()
        try:
            ok, result = self._call(worker, event)
        finally:
            with self._free_changed:
                if worker.alive:
                    self._free.append(worker)
                self._free_changed.notify_all()
        if not ok:
            with self._free_changed:
                self.errors += 1
            raise FunctionError(f"{self.function_id} raised:\n{result}")
        return result

    def _take(self) -> _Worker:
        with self._free_changed:
            while not self._free:
                if self._stopping:
                    raise FunctionError(f"{self.function_id}: stopped")
                if not any(worker.alive for worker in self._workers):
                    raise FunctionError(f"{self.function_id}: every worker process died")
                self._free_changed.wait()
            if self._stopping:
                raise FunctionError(f"{self.function_id}: stopped")
            self.invocations += 1
            return self._free.pop()

    def _call(self, worker: _Worker, event: dict[str, Any]) -> tuple[bool, Any]:
        try:
            worker.connection.send(event)
            answer: tuple[bool, Any] = worker.connection.recv()
            return answer
        except (EOFError, OSError, TypeError) as error:  # the worker died or was killed: a function error
            worker.alive = False
            return False, f"its worker (pid {worker.process.pid}) died: {error!r}"

    def stop(self) -> None:
        """Let the invocations in flight finish, then end the workers."""
        with self._free_changed:
            self._stopping = True
            self._free_changed.notify_all()  # those waiting for a worker are refused
            self._free_changed.wait_for(
                lambda: len(self._free) == sum(worker.alive for worker in self._workers)
            )
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.connection.send(None)
            worker.process.join()
            worker.connection.close()

    def kill(self) -> None:
        """End the workers at once (their invocations are stuck), and reap them."""
        with self._free_changed:
            self._stopping = True
            self._free_changed.notify_all()
        for worker in self._workers:
            worker.process.kill()  # SIGKILL, unless it has ended already
        for worker in self._workers:
            worker.process.join(5)
            if not worker.process.is_alive():
                worker.connection.close()


class Poller(Protocol):
    """An event source mapping played locally: polls a source, invokes a function."""

    name: str

    def start(self) -> None:
        """Start polling in background thread(s)."""

    def stop(self) -> None:
        """Stop polling, let the batch in flight finish (and its result be applied), then return."""

    def stats(self) -> dict[str, int]:
        """Counters for the console status line (batches, records, failures...)."""
