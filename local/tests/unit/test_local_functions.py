"""Functions in worker processes: each worker one invocation at a time, errors as Lambda's."""

from __future__ import annotations

import itertools
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local import testing
from orderpipe_local.runtime.functions import (
    PRELOADED_MODULES,
    FunctionError,
    FunctionState,
    FunctionUnavailable,
    LocalFunction,
    ProcessPoolFunction,
)
from orderpipe_local.testing import ROOT, alive, forkserver_pid

HANDLER = """
import os, signal, time

def lambda_handler(event, context):
    if event.get("raise"):
        raise ValueError("the order is " + event["raise"])
    if event.get("exit"):
        os._exit(3)
    if event.get("sys_exit"):
        raise SystemExit(2)
    if event.get("unpicklable"):
        return lambda: None
    if event.get("say"):
        print(event["say"])
    started = time.monotonic()
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "started": started, "ended": time.monotonic(),
            "function": context.function_name, "echo": event.get("echo"), "nice": os.nice(0),
            "sigchld_ignored": signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN}
"""


def pool_of(
    tmp_path: Path, workers: int, source: str = HANDLER, nice: int = 0, timeout_seconds: float = 3
) -> ProcessPoolFunction:
    (tmp_path / "app.py").write_text(textwrap.dedent(source))
    function_id = f"PoolFunction{tmp_path.name.replace('-', '_')}"
    function = LocalFunction(
        function_id,
        handler=lambda event, context: None,
        timeout_seconds=timeout_seconds,
        memory_mb=128,
        code_dir=tmp_path,
        handler_name="app.lambda_handler",
    )
    pool = ProcessPoolFunction(function, workers, nice=nice)
    _made.append(pool)
    return pool


_made: list[ProcessPoolFunction] = []


@pytest.fixture(autouse=True)
def _no_pool_outlives_its_test() -> Iterator[None]:
    """A test that failed halfway leaves no environments to disturb the next ones."""
    yield
    while _made:
        _made.pop().kill()


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[ProcessPoolFunction]:
    pool = pool_of(tmp_path, workers=2)
    yield pool
    pool.stop()


def test_the_handler_runs_in_a_worker_process_with_the_event_and_a_context(
    two_workers: ProcessPoolFunction,
) -> None:
    result = two_workers.invoke({"echo": "order 1"})

    assert result["echo"] == "order 1"
    assert result["function"] == two_workers.function_id
    assert result["pid"] != os.getpid()
    assert (two_workers.invocations, two_workers.errors) == (1, 0)


def test_invocations_run_in_parallel_workers_and_one_at_a_time_in_each(
    two_workers: ProcessPoolFunction,
) -> None:
    # When four invocations of 0.3 s arrive at once for two workers
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(two_workers.invoke({"sleep": 0.3}))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then both workers took some, each one at a time
    assert len(results) == 4
    by_worker: dict[int, list[dict[str, Any]]] = {}
    for result in results:
        by_worker.setdefault(result["pid"], []).append(result)
    assert len(by_worker) == 2
    for runs in by_worker.values():
        ordered = sorted(runs, key=lambda run: run["started"])
        assert all(one["ended"] <= next_one["started"] for one, next_one in itertools.pairwise(ordered))


def test_a_handler_error_is_a_function_error_with_its_traceback_and_the_worker_goes_on(
    two_workers: ProcessPoolFunction,
) -> None:
    with pytest.raises(FunctionError, match=r"(?s)ValueError: the order is malformed"):
        two_workers.invoke({"raise": "malformed"})

    assert two_workers.invoke({"echo": "next"})["echo"] == "next"
    assert (two_workers.invocations, two_workers.errors) == (2, 1)


def test_a_worker_that_dies_fails_its_invocation_and_the_others_still_serve(
    two_workers: ProcessPoolFunction,
) -> None:
    # When the handler ends its process
    with pytest.raises(FunctionError, match="died"):
        two_workers.invoke({"exit": True})

    # Then that invocation alone failed: the next ones are answered
    answers = [two_workers.invoke({"echo": n}) for n in range(4)]
    assert [answer["echo"] for answer in answers] == [0, 1, 2, 3]
    assert (two_workers.invocations, two_workers.errors) == (5, 1)


def test_stop_lets_the_invocation_in_flight_finish_then_refuses_new_ones(tmp_path: Path) -> None:
    pool = pool_of(tmp_path, workers=1)
    results: list[dict[str, Any]] = []
    in_flight = threading.Thread(target=lambda: results.append(pool.invoke({"sleep": 0.5, "echo": "last"})))
    in_flight.start()
    deadline = time.monotonic() + 10
    while pool.invocations < 1 and time.monotonic() < deadline:  # it has its worker
        time.sleep(0.01)

    pool.stop()
    in_flight.join()

    assert [result["echo"] for result in results] == ["last"]
    with pytest.raises(FunctionError, match="stopped"):
        pool.invoke({})


def test_a_handler_that_cannot_load_fails_the_pool_at_once(tmp_path: Path) -> None:
    with pytest.raises(FunctionError, match=r"(?s)could not load.*ZeroDivisionError"):
        pool_of(tmp_path, workers=2, source="1 / 0\n")


def test_a_worker_that_died_is_replaced_by_a_new_execution_environment(tmp_path: Path) -> None:
    # Given a function with one execution environment, whose process ends during an invocation
    pool = pool_of(tmp_path, workers=1)
    first = pool.invoke({})["pid"]
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})

    # Then the next invocation waits for a new environment and is answered there
    answer = pool.invoke({"echo": "again"})
    assert answer["echo"] == "again"
    assert answer["pid"] != first
    pool.stop()


def test_an_invocation_over_the_timeout_fails_and_its_environment_is_replaced(tmp_path: Path) -> None:
    # Given a function with a 0.5 s timeout and one execution environment
    pool = pool_of(tmp_path, workers=1, timeout_seconds=0.5)
    first = pool.invoke({})["pid"]

    # When an invocation runs for 30 s
    started = time.monotonic()
    with pytest.raises(FunctionError, match=r"Task timed out after 0\.50 seconds"):
        pool.invoke({"sleep": 30})

    # Then it fails at the timeout, as in Lambda; its process is gone, and a new one answers
    assert time.monotonic() - started < 5
    assert not Path(f"/proc/{first}").exists()
    answer = pool.invoke({"echo": "after"})
    assert (answer["echo"], answer["pid"] != first) == ("after", True)
    assert (pool.invocations, pool.errors) == (3, 1)
    pool.stop()


def test_once_no_environment_can_be_started_the_function_is_unavailable_until_one_can(
    tmp_path: Path,
) -> None:
    # Given a function whose code breaks after its one environment started
    pool = pool_of(tmp_path, workers=1)
    working = (tmp_path / "app.py").read_text()
    (tmp_path / "app.py").write_text("1 / 0\n")

    # When that environment dies, and its replacements cannot load the handler
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})

    # Then, after a few attempts, the function is unavailable and its invocations fail at once
    with pytest.raises(
        FunctionUnavailable, match=r"unavailable.*3 starts in a row failed.*ZeroDivisionError"
    ):
        pool.invoke({})
    started = time.monotonic()
    with pytest.raises(FunctionUnavailable):
        pool.invoke({})
    assert time.monotonic() - started < 0.5
    health = pool.health()
    assert (health.state, health.alive, health.environments) == (FunctionState.UNAVAILABLE, 0, 1)
    assert "ZeroDivisionError" in health.detail
    assert not pool.available

    # And once the code loads again, a later attempt brings it back
    (tmp_path / "app.py").write_text(working)
    wait_for(lambda: pool.available, timeout=15)
    assert pool.invoke({"echo": "back"})["echo"] == "back"
    assert pool.health().state == FunctionState.OK
    pool.stop()


def test_workers_run_at_the_niceness_they_are_given(tmp_path: Path) -> None:
    pool = pool_of(tmp_path, workers=1, nice=5)
    try:
        assert pool.invoke({})["nice"] == os.nice(0) + 5
    finally:
        pool.stop()


def test_sys_exit_and_a_response_that_cannot_travel_are_function_errors_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    pool = pool_of(tmp_path, workers=1)
    try:
        with pytest.raises(FunctionError, match="SystemExit"):
            pool.invoke({"sys_exit": True})
        with pytest.raises(FunctionError, match=r"(?i)pickle"):
            pool.invoke({"unpicklable": True})

        assert pool.invoke({"echo": "still here"})["echo"] == "still here"
    finally:
        pool.stop()


def test_workers_and_their_forkserver_exit_when_the_process_that_owns_them_is_killed(
    tmp_path: Path,
) -> None:
    # Given a process running a pool of two workers, one of them invoked, one replaced
    (tmp_path / "app.py").write_text(textwrap.dedent(HANDLER))
    program = textwrap.dedent(
        f"""
        import os, sys, threading, time
        from pathlib import Path
        from orderpipe_local.runtime.functions import LocalFunction, ProcessPoolFunction

        function = LocalFunction("Owned", handler=print, timeout_seconds=30, memory_mb=128,
                                 code_dir=Path({str(tmp_path)!r}), handler_name="app.lambda_handler")
        pool = ProcessPoolFunction(function, 2)
        try:
            pool.invoke({{"exit": True}})
        except Exception:
            pass
        threading.Thread(target=pool.invoke, args=({{"sleep": 3}},), daemon=True).start()
        time.sleep(1)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    assert owner.stdout.readline().strip() == "ready"
    descendants = set(testing.descendants(owner.pid))
    assert len(descendants) >= 4  # the forkserver, its two workers, the resource tracker

    # When it is killed, with no chance to stop them
    owner.kill()
    owner.wait()

    # Then they see their pipes close and exit: the idle worker at once, the invoked one
    # once its invocation is over, and the forkserver and resource tracker after them
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in descendants if alive(pid)]


def test_sys_exit_in_an_in_process_function_is_a_function_error() -> None:
    def exits(event: dict[str, Any], context: Any) -> None:
        raise SystemExit(2)

    function = LocalFunction("InProcess", handler=exits, timeout_seconds=3, memory_mb=128)

    with pytest.raises(FunctionError, match="SystemExit"):
        function.invoke({})
    assert (function.invocations, function.errors) == (1, 1)


def outcome(pool: ProcessPoolFunction, event: dict[str, Any]) -> str:
    """What an invocation came to, for invocations made in other threads."""
    try:
        pool.invoke(event)
    except FunctionError as error:
        return str(error)
    return "answered"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_environments_ended_together_are_replaced_without_holding_each_others_pipes(tmp_path: Path) -> None:
    # Given four environments whose invocations all time out at once
    pool = pool_of(tmp_path, workers=4, timeout_seconds=0.5)
    outcomes: list[str] = []

    def invoke_for_30_seconds() -> None:
        outcomes.append(outcome(pool, {"sleep": 30}))

    threads = [threading.Thread(target=invoke_for_30_seconds) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == 4
    assert all("Task timed out after 0.50 seconds" in text for text in outcomes), outcomes

    # When one of their replacements then dies
    started = time.monotonic()
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})

    # Then its death is seen at once (no other worker holds its pipe open), and all serve again
    assert time.monotonic() - started < 3
    answers = [pool.invoke({"echo": n}) for n in range(4)]
    assert [answer["echo"] for answer in answers] == [0, 1, 2, 3]
    pool.stop()


def test_replacing_environments_leaks_no_descriptors(tmp_path: Path) -> None:
    pool = pool_of(tmp_path, workers=1)
    pool.invoke({})
    before = open_descriptors()

    for _ in range(10):
        with pytest.raises(FunctionError, match="died"):
            pool.invoke({"exit": True})
    pool.invoke({})

    # (the first worker, this process's child, held one more: the pipe that tells its exit)
    assert open_descriptors() <= before
    pool.stop()


def test_kill_ends_an_environment_still_loading(tmp_path: Path) -> None:
    # Given a function whose handler takes 30 s to load once a flag file exists
    slow = tmp_path / "slow"
    source = f"import os, time\nif os.path.exists({str(slow)!r}):\n    time.sleep(30)\n" + textwrap.dedent(
        HANDLER
    )
    pool = pool_of(tmp_path, workers=1, source=source)
    slow.touch()

    # When its environment dies and the replacement is loading
    failed: list[str] = []
    crashing = threading.Thread(target=lambda: failed.append(outcome(pool, {"exit": True})))
    crashing.start()
    wait_for(lambda: pool._loading)
    (loading,) = [environment.pid for environment in pool._loading]
    pool.kill()
    crashing.join(10)

    # Then kill ends it too, at once, and the failed invocation is answered
    assert not crashing.is_alive()
    assert len(failed) == 1
    assert "died" in failed[0]
    wait_until_gone = time.monotonic() + 5
    while Path(f"/proc/{loading}").exists() and time.monotonic() < wait_until_gone:
        time.sleep(0.05)
    assert not Path(f"/proc/{loading}").exists()


def test_a_replacement_runs_like_the_first_workers(tmp_path: Path) -> None:
    # Given a pool at niceness 5 whose only worker died and was replaced
    pool = pool_of(tmp_path, workers=1, nice=5)
    base = os.nice(0)
    first = pool.invoke({})
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})
    pool.invoke({})  # once the replacement is up
    forkserver = forkserver_pid(os.getpid())
    forkserver_descriptors = len(os.listdir(f"/proc/{forkserver}/fd"))  # once it has served
    for _ in range(5):
        with pytest.raises(FunctionError, match="died"):
            pool.invoke({"exit": True})
    replacement = pool.invoke({})

    # Then the replacement has the pool's niceness, as the first worker had, and its own
    # children can be waited for
    assert replacement["pid"] != first["pid"]
    assert first["nice"] == replacement["nice"] == base + 5
    assert (first["sigchld_ignored"], replacement["sigchld_ignored"]) == (False, False)
    # And the forkserver keeps no descriptor of the workers that ended
    assert len(os.listdir(f"/proc/{forkserver}/fd")) == forkserver_descriptors
    assert pool.health().replaced == 6
    pool.stop()


def test_a_forkserver_that_cannot_start_workers_makes_the_function_unavailable_and_wedges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pool whose forkserver cannot be reached (at the descriptor limit, say)
    pool = pool_of(tmp_path, workers=1)

    def refuse(descriptors: object) -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(multiprocessing.forkserver, "connect_to_new_process", refuse)

    # When the worker dies and no replacement can be had
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})

    # Then invocations fail as unavailable, and the pool still stops
    with pytest.raises(FunctionUnavailable, match="Too many open files"):
        pool.invoke({})
    stopping = threading.Thread(target=pool.stop)
    stopping.start()
    stopping.join(10)
    assert not stopping.is_alive()


def test_an_environment_killed_while_idle_is_replaced_before_any_invocation_needs_it(
    two_workers: ProcessPoolFunction,
) -> None:
    # Given two idle environments
    before = {environment.pid for environment in two_workers._environments}

    # When one is killed from outside
    killed = min(before)
    os.kill(killed, signal.SIGKILL)

    # Then a new one takes its place, with no invocation failing for it
    wait_for(lambda: two_workers.health().replaced == 1)
    health = two_workers.health()
    assert (health.state, health.alive) == (FunctionState.OK, 2)
    assert not alive(killed)
    answers = [two_workers.invoke({"echo": n}) for n in range(4)]
    assert [answer["echo"] for answer in answers] == [0, 1, 2, 3]
    assert killed not in {answer["pid"] for answer in answers}
    assert two_workers.errors == 0


def test_an_environment_killed_while_idle_after_an_invocation_is_replaced_too(
    two_workers: ProcessPoolFunction,
) -> None:
    # Given one environment invoked while the other is killed and replaced
    invoked = threading.Thread(target=two_workers.invoke, args=({"sleep": 1},))
    invoked.start()
    wait_for(lambda: len(two_workers._free) == 1)
    (idle,) = [environment.pid for environment in two_workers._free]
    os.kill(idle, signal.SIGKILL)
    wait_for(lambda: two_workers.health().replaced == 1)
    invoked.join(10)
    (was_invoked,) = [
        env.pid for env in two_workers._environments if env.pid != idle and env.replacement is False
    ]

    # When the one that was invoked, idle now, is killed
    os.kill(was_invoked, signal.SIGKILL)

    # Then it is replaced as promptly
    wait_for(lambda: two_workers.health().replaced == 2, timeout=5)
    assert two_workers.health().alive == 2
    assert [two_workers.invoke({"echo": n})["echo"] for n in range(3)] == [0, 1, 2]


def test_environments_are_replaced_when_the_forkserver_goes_away(tmp_path: Path) -> None:
    # Given a pool of two, invoked all along
    pool = pool_of(tmp_path, workers=2)
    first = {environment.pid for environment in pool._environments}
    outcomes: list[str] = []
    invoking = threading.Event()
    invoking.set()

    def invoke_all_along() -> None:
        while invoking.is_set():
            outcomes.append(outcome(pool, {"sleep": 0.01}))

    invoker = threading.Thread(target=invoke_all_along)
    invoker.start()

    # When the forkserver is killed, and then with it every environment it forked
    os.kill(forkserver_pid(os.getpid()), signal.SIGKILL)
    wait_for(lambda: pool.health().replaced >= 2 and pool.health().state == FunctionState.OK)
    os.kill(forkserver_pid(os.getpid()), signal.SIGKILL)
    for environment in list(pool._environments):
        os.kill(environment.pid, signal.SIGKILL)
    wait_for(lambda: pool.health().replaced >= 4 and pool.health().state == FunctionState.OK)
    invoking.clear()
    invoker.join(10)

    # Then new environments, forked from a new forkserver, serve; only invocations in the
    # environments killed under them failed
    assert not {environment.pid for environment in pool._environments} & first
    assert "answered" in outcomes
    assert all(text == "answered" or "died" in text for text in outcomes), set(outcomes)
    assert [pool.invoke({"echo": n})["echo"] for n in range(4)] == [0, 1, 2, 3]
    pool.stop()


def test_what_a_function_prints_goes_where_the_pipelines_standard_output_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the pipeline's standard output redirected to a function log, as `orderpipe local` does
    log = tmp_path / "functions.log"
    with log.open("w", encoding="utf-8") as function_log:
        monkeypatch.setattr(sys, "stdout", function_log)
        pool = pool_of(tmp_path, workers=1)
        print("the pipeline's own line", file=function_log, flush=True)

        # When the handler prints, in the first environment and in a replacement
        pool.invoke({"say": "order o-1 stored"})
        with pytest.raises(FunctionError, match="died"):
            pool.invoke({"exit": True})
        pool.invoke({"say": "order o-2 stored"})
        pool.stop()

    # Then its lines are in the log, after what was there, at once (each invocation flushed)
    assert log.read_text().splitlines() == ["the pipeline's own line", "order o-1 stored", "order o-2 stored"]


def test_the_forkserver_preloads_nothing_that_reads_a_functions_environment() -> None:
    # Powertools' Logger and Metrics take the service name, namespace and stage from the
    # environment when orderpipe.observability builds them: each function's, in its environment
    preload = [name for name in PRELOADED_MODULES if name != "__main__"]
    program = (
        f"import importlib, sys\nfor name in {preload!r}: importlib.import_module(name)\n"
        "print(sorted(sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout

    assert "orderpipe.observability" not in loaded
    assert "_app'" not in loaded  # no handler module


def wait_for(condition: Callable[[], Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {timeout} s"
        time.sleep(0.02)
