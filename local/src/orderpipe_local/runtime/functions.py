"""The template's Lambda functions, run in-process with a Lambda context."""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, Protocol

from orderpipe.aws import clients
from orderpipe_local.runtime.gc_pauses import freeze_survivors
from orderpipe_local.runtime.handlers import Handler, load_handler
from orderpipe_local.runtime.lambda_context import LocalLambdaContext
from orderpipe_local.stack.provision import Stack


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


WORKER_LOAD_TIMEOUT_SECONDS = 60.0
log = logging.getLogger(__name__)

# The handler of a worker process (one per process, loaded when it starts).
_worker_handler: Handler | None = None
# This process's ends of its workers' pipes, its own worker's among them: a worker closes those
# it inherits, so that its pipe's other end is held by the pipeline alone, and the worker sees
# EOF (and exits) when the pipeline goes, however it goes.
_pipeline_ends: list[Connection] = []


@atexit.register
def _let_workers_go() -> None:
    """At exit, before multiprocessing joins its children: a pool that was never stopped has
    workers and a zygote that ignore SIGTERM and wait for their pipe; closing it ends them."""
    for connection in list(_pipeline_ends):
        with contextlib.suppress(OSError):
            connection.close()


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
    clients.reset()
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


def _serve_zygote(control: Connection, function: LocalFunction, nice: int) -> None:
    """A pool's zygote: forked with the pool, before any thread of the pipeline starts, it forks
    each new worker the pool asks for, so that no worker is ever forked from a process with
    threads. It sends the new worker's pipe end (as a file descriptor) and pid back, and ends
    when the pool stops or the pipeline goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers it forks
    for inherited in _pipeline_ends:
        inherited.close()
    os.nice(nice)  # its workers inherit it
    while True:
        try:
            if control.recv() is None:
                return
        except EOFError:
            return
        try:
            pipeline_end, worker_end = multiprocessing.Pipe()
            pid = os.fork()
        except OSError as error:  # no process or pipe to be had now: the pool may ask again
            control.send((False, repr(error)))
            continue
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the handler's own children
                control.close()
                pipeline_end.close()
                _serve_invocations(worker_end, function, nice=0)
            finally:
                os._exit(0)
        worker_end.close()
        control.send((True, pid))
        reduction.send_handle(control, pipeline_end.fileno(), os.getppid())
        pipeline_end.close()


@dataclass
class _Worker:
    pid: int
    connection: Connection  # the pipeline's end of the worker's pipe
    process: BaseProcess | None = None  # None: forked by the zygote, not by this process
    alive: bool = True
    # A worker the zygote forked is reaped by the kernel once it exits, and its pid may then be
    # another process's: it is signalled through a pidfd, which names that one process only.
    pidfd: int | None = None
    _closing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def kill(self) -> None:
        """SIGKILL, and reap it if it is this process's child."""
        self.alive = False
        if self.process is not None:
            self.process.kill()
            self.process.join(5)
        else:
            with self._closing:
                if self.pidfd is not None:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def end(self) -> None:
        self.kill()
        self.close()

    def close(self) -> None:
        """Once, whichever threads ask (kill() and a replacement's own clean-up may both)."""
        with self._closing:
            with contextlib.suppress(ValueError):
                _pipeline_ends.remove(self.connection)
            self.connection.close()
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None


class ProcessPoolFunction:
    """A function run in `workers` execution environments, each a forked process that handles
    one invocation at a time, so that invocations run in parallel without sharing the
    handler's module state. An invocation takes a free worker and talks to it over its own
    pipe: no thread of this process stands between the caller and the worker.

    As in Lambda, an invocation that runs over the function's timeout fails ("Task timed out")
    and its environment is ended; an environment that ends, timed out or crashed, is replaced
    by a new one, loaded before the failed invocation is answered.

    Create it before any thread of this process starts (forking a process with running threads
    is unsafe): the workers and the pool's zygote, which forks the replacements, are forked at
    once, here, and the workers loaded before it returns.
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
        self.timeout_seconds = function.timeout_seconds
        self._free: list[_Worker] = []
        self._free_changed = threading.Condition()
        self._replacing = 0  # environments being started in place of ended ones
        self._stopping = False
        self._zygote_lock = threading.Lock()  # one request to the zygote at a time
        self._workers = [self._fork(_serve_invocations, function, nice, "worker") for _ in range(workers)]
        self._zygote = self._fork(_serve_zygote, function, nice, "zygote")
        for worker in self._workers:  # a worker that fails to load fails the pipeline's start
            loaded, detail = self._loaded(worker)
            if not loaded:
                self.kill()
                raise FunctionError(f"{self.function_id}: a worker could not load the handler:\n{detail}")
            self._free.append(worker)

    def _fork(self, target: Any, function: LocalFunction, nice: int, role: str) -> _Worker:
        """A child of this process running `target` (a worker, or the zygote) on its own pipe."""
        sys.stdout.flush()  # what is buffered would be written again by the child
        sys.stderr.flush()
        context = multiprocessing.get_context("fork")
        pipeline_end, child_end = context.Pipe()
        _pipeline_ends.append(pipeline_end)  # before the fork: the child closes its copy
        process = context.Process(
            target=target, args=(child_end, function, nice), name=f"{self.function_id} {role}", daemon=True
        )
        process.start()
        child_end.close()
        assert process.pid is not None
        return _Worker(process.pid, pipeline_end, process)

    @staticmethod
    def _loaded(worker: _Worker, timeout: float = WORKER_LOAD_TIMEOUT_SECONDS) -> tuple[bool, str]:
        try:
            if not worker.connection.poll(timeout):
                return False, f"the worker did not load within {timeout:.0f} s"
            loaded, detail = worker.connection.recv()
            return bool(loaded), str(detail)
        except (EOFError, OSError):
            return False, "the worker exited while loading"

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler in a free worker (waiting for one). An exception it raises, its
        timeout, or the worker's death is a FunctionError."""
        try:
            payload = ForkingPickler.dumps(event)
        except Exception as error:
            raise FunctionError(f"{self.function_id}: the event cannot be sent: {error!r}") from error
        worker = self._take()
        try:
            ok, result = self._call(worker, payload)
        finally:
            with self._free_changed:
                if worker.alive:
                    self._free.append(worker)
                self._free_changed.notify_all()
        if not ok:
            with self._free_changed:
                self.errors += 1
            raise FunctionError(result)
        return result

    def _take(self) -> _Worker:
        with self._free_changed:
            while not self._free:
                if self._stopping:
                    raise FunctionError(f"{self.function_id}: stopped")
                if not self._replacing and not any(worker.alive for worker in self._workers):
                    raise FunctionError(f"{self.function_id}: every worker process died")
                self._free_changed.wait()
            if self._stopping:
                raise FunctionError(f"{self.function_id}: stopped")
            self.invocations += 1
            return self._free.pop()

    def _call(self, worker: _Worker, payload: memoryview) -> tuple[bool, Any]:
        try:
            worker.connection.send_bytes(payload)
            if not worker.connection.poll(self.timeout_seconds):
                self._end(worker)
                return False, f"{self.function_id}: Task timed out after {self.timeout_seconds:.2f} seconds"
            answer: tuple[bool, Any] = worker.connection.recv()
        except (EOFError, OSError) as error:  # the worker died or was killed: a function error
            self._end(worker)
            return False, f"{self.function_id}: its worker (pid {worker.pid}) died: {error!r}"
        ok, result = answer
        return ok, result if ok else f"{self.function_id} raised:\n{result}"

    def _end(self, worker: _Worker) -> None:
        """End a worker whose invocation failed with it, and start another in its place."""
        with self._free_changed:
            worker.alive = False
            self._workers.remove(worker)
            replace = not self._stopping
            if replace:
                self._replacing += 1
        try:
            worker.end()
        finally:
            if replace:
                self._replace()

    def _replace(self) -> None:
        """A new worker from the zygote, loaded before it joins the free ones (in the caller's
        thread: the invocation that failed is answered once its environment is back).
        Counted in `_replacing` until it is done, whatever happens."""
        worker, loaded, detail = None, False, ""
        try:
            worker = self._spawn()
            with self._free_changed:
                self._workers.append(worker)
            loaded, detail = self._loaded(worker)
        except Exception as error:
            detail = repr(error)
        finally:
            with self._free_changed:
                self._replacing -= 1
                if worker is not None and loaded and worker.alive and not self._stopping:
                    self._free.append(worker)
                    worker = None
                elif worker is not None and worker in self._workers:
                    self._workers.remove(worker)
                self._free_changed.notify_all()
        if worker is not None:  # not loaded, or stopped meanwhile
            worker.end()
        if not loaded:
            log.error("%s: a new execution environment could not start: %s", self.function_id, detail)

    def _spawn(self) -> _Worker:
        """Ask the zygote for a new worker. A conversation cut short leaves the zygote's pipe out
        of step: the zygote is then ended, and no further worker is asked of it."""
        with self._zygote_lock:
            if not self._zygote.alive:
                raise FunctionError(f"{self.function_id}: no zygote to start a new environment")
            descriptor = None
            try:
                self._zygote.connection.send(True)
                forked, pid = self._zygote.connection.recv()
                if not forked:
                    raise FunctionError(f"{self.function_id}: the zygote could not fork: {pid}")
                descriptor = reduction.recv_handle(self._zygote.connection)
                worker = _Worker(pid, Connection(descriptor))
                descriptor = None
                _pipeline_ends.append(worker.connection)
            except FunctionError:
                raise
            except Exception:
                if descriptor is not None:
                    os.close(descriptor)
                self._zygote.kill()
                raise
        try:
            worker.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # it has ended already
            worker.alive = False
        return worker

    def stop(self) -> None:
        """Let the invocations in flight finish, then end the workers and the zygote."""
        with self._free_changed:
            self._stopping = True
            self._free_changed.notify_all()  # those waiting for a worker are refused
            self._free_changed.wait_for(
                lambda: not self._replacing and len(self._free) == sum(w.alive for w in self._workers)
            )
            workers = [*self._workers, self._zygote]
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.connection.send(None)
        for worker in workers:
            if worker.process is not None:
                worker.process.join()
            else:  # not this process's child: gone once its pipe reads EOF
                with contextlib.suppress(EOFError, OSError):
                    while worker.connection.poll(5) and worker.connection.recv_bytes():
                        pass
            worker.close()

    def kill(self) -> None:
        """End the workers at once (their invocations are stuck), and reap them."""
        with self._free_changed:
            self._stopping = True
            self._free_changed.notify_all()
            workers = [*self._workers, self._zygote]
        for worker in workers:
            worker.kill()
        for worker in workers:
            if worker.process is None or not worker.process.is_alive():
                worker.close()


class Poller(Protocol):
    """An event source mapping played locally: polls a source, invokes a function."""

    name: str

    def start(self) -> None:
        """Start polling in background thread(s)."""

    def stop(self) -> None:
        """Stop polling, let the batch in flight finish (and its result be applied), then return."""

    def stats(self) -> dict[str, int]:
        """Counters for the console status line (batches, records, failures...)."""
