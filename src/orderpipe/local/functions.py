"""The template's Lambda functions, run in-process with a Lambda context."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orderpipe import resources
from orderpipe.lambda_context import LocalLambdaContext
from orderpipe.stack.functions import Handler, load_handler
from orderpipe.stack.provision import Stack


@dataclass
class LocalFunction:
    """One function of the template: its handler, timeout and memory, invoked like Lambda does."""

    function_id: str
    handler: Handler
    timeout_seconds: float
    memory_mb: int
    invocations: int = 0
    errors: int = 0
    code_dir: Path | None = None
    handler_name: str = ""
    _environment: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
            self.invocations += 1
            try:
                return self.handler(event, context)
            except Exception:
                self.errors += 1
                raise


def load_functions(stack: Stack, root: Path) -> dict[str, LocalFunction]:
    """Every AWS::Lambda::Function of the template, loaded from its CodeUri."""
    functions = {}
    for function_id, resource in stack.functions().items():
        properties = resource["Properties"]
        code_dir = root / stack.template.source_code_uris[function_id]
        functions[function_id] = LocalFunction(
            function_id=function_id,
            handler=load_handler(code_dir, properties["Handler"], f"{function_id}_app"),
            timeout_seconds=float(stack.resolve(properties.get("Timeout", 3))),
            memory_mb=int(stack.resolve(properties.get("MemorySize", 128))),
            code_dir=code_dir,
            handler_name=properties["Handler"],
        )
    return functions


class Invocable(Protocol):
    """What the HTTP API and the SQS event source need of a function: invoke it with an event."""

    function_id: str
    invocations: int
    errors: int

    def invoke(self, event: dict[str, Any]) -> Any: ...


class FunctionError(Exception):
    """The handler raised in a worker process; the message carries its traceback."""


# The handler of a worker process (one per process, set by its initializer).
_worker_handler: Handler | None = None


def _init_worker(code_dir: Path, handler_name: str, module_alias: str) -> None:
    """A new execution environment: the parent coordinates shutdown, so the worker ignores
    Ctrl-C and SIGTERM; boto3 clients must not cross a fork, so they are built anew."""
    global _worker_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    resources.reset()
    _worker_handler = load_handler(code_dir, handler_name, module_alias)


def _warm_up() -> int:
    return os.getpid()


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
    except Exception:
        return False, traceback.format_exc()
    finally:
        # The function log is a file shared with the parent: write this invocation's lines out.
        sys.stdout.flush()


class ProcessPoolFunction:
    """A function run in `workers` execution environments, each a forked process that handles
    one invocation at a time, so that invocations run in parallel without sharing the
    handler's module state.

    Create it before any thread of this process starts (forking a process with running threads
    is unsafe): the workers are forked at once, here.
    """

    def __init__(self, function: LocalFunction, workers: int) -> None:
        if function.code_dir is None or not function.handler_name:
            raise ValueError(f"{function.function_id}: no code to load in a worker")
        self.function_id = function.function_id
        self.name = f"{function.function_id} workers"
        self.timeout_seconds = function.timeout_seconds
        self.memory_mb = function.memory_mb
        self.workers = workers
        self.invocations = 0
        self.errors = 0
        self._lock = threading.Lock()
        sys.stdout.flush()  # what is buffered would be written again by every worker
        sys.stderr.flush()
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(function.code_dir, function.handler_name, f"{function.function_id}_app"),
        )
        # Fork every worker now (the fork context launches them all on the first submit) and
        # wait until each is loaded; a worker that fails to load breaks the pool here.
        warm_ups = [self._pool.submit(_warm_up) for _ in range(workers)]
        for warm_up in warm_ups:
            warm_up.result()

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler in a free worker. An exception it raises is a FunctionError."""
        with self._lock:
            self.invocations += 1
        try:
            ok, result = self._pool.submit(
                _invoke_in_worker, self.function_id, self.timeout_seconds, self.memory_mb, event
            ).result()
        except Exception:  # the worker died, say: a function error too
            with self._lock:
                self.errors += 1
            raise
        if not ok:
            with self._lock:
                self.errors += 1
            raise FunctionError(f"{self.function_id} raised:\n{result}")
        return result

    def stop(self) -> None:
        """Let the invocations in flight finish, then end the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        """End the workers without waiting (their invocations are stuck)."""
        processes = list(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=False, cancel_futures=True)
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Poller(Protocol):
    """An event source mapping played locally: polls a source, invokes a function."""

    name: str

    def start(self) -> None:
        """Start polling in background thread(s)."""

    def stop(self) -> None:
        """Stop polling, let the batch in flight finish (and its result be applied), then return."""

    def stats(self) -> dict[str, int]:
        """Counters for the console status line (batches, records, failures...)."""
