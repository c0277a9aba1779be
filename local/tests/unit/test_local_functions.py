"""Functions in worker processes: each worker one invocation at a time, errors as Lambda's."""

from __future__ import annotations

import itertools
import multiprocessing.reduction
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderpipe_local.runtime.functions import FunctionError, LocalFunction, ProcessPoolFunction
from orderpipe_local.testing import ROOT

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
    return ProcessPoolFunction(function, workers, nice=nice)


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


def test_once_no_environment_can_be_started_invocations_fail_at_once(tmp_path: Path) -> None:
    # Given a function whose code breaks after its one environment started
    pool = pool_of(tmp_path, workers=1)
    (tmp_path / "app.py").write_text("1 / 0\n")

    # When that environment dies, and its replacement cannot load the handler
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})

    # Then invocations fail at once instead of waiting for ever
    with pytest.raises(FunctionError, match="every worker process died"):
        pool.invoke({})
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


def test_workers_exit_when_the_process_that_owns_them_is_killed(tmp_path: Path) -> None:
    # Given a process running a pool of two workers
    (tmp_path / "app.py").write_text(textwrap.dedent(HANDLER))
    program = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from orderpipe_local.runtime.functions import LocalFunction, ProcessPoolFunction

        function = LocalFunction("Owned", handler=print, timeout_seconds=3, memory_mb=128,
                                 code_dir=Path({str(tmp_path)!r}), handler_name="app.lambda_handler")
        pool = ProcessPoolFunction(function, 2)
        print(" ".join(str(pool.invoke({{"sleep": 0}})["pid"]) for _ in range(2)), flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    workers = {int(pid) for pid in owner.stdout.readline().split()}
    assert workers

    # When it is killed, with no chance to stop them
    owner.kill()
    owner.wait()

    # Then they see their pipe close and exit
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited, whoever reaps it


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
    deadline = time.monotonic() + 10
    while not any(worker.process is None for worker in pool._workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    (loading,) = [worker.pid for worker in pool._workers if worker.process is None]
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
    # Given a pool at niceness 5 whose only worker died and was replaced by the zygote
    pool = pool_of(tmp_path, workers=1, nice=5)
    base = os.nice(0)
    first = pool.invoke({})
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})
    zygote_descriptors = len(os.listdir(f"/proc/{pool._zygote.pid}/fd"))  # once it has served
    for _ in range(5):
        with pytest.raises(FunctionError, match="died"):
            pool.invoke({"exit": True})
    replacement = pool.invoke({})

    # Then the replacement has the pool's niceness, as the first worker had, and its own
    # children can be waited for (the zygote ignores SIGCHLD; its workers must not)
    assert replacement["pid"] != first["pid"]
    assert first["nice"] == replacement["nice"] == base + 5
    assert (first["sigchld_ignored"], replacement["sigchld_ignored"]) == (False, False)
    # And the zygote keeps no descriptor of the workers it forked
    assert len(os.listdir(f"/proc/{pool._zygote.pid}/fd")) == zygote_descriptors
    pool.stop()


def test_a_failed_exchange_with_the_zygote_fails_the_invocation_and_wedges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pool whose zygote's answer cannot be read (at the descriptor limit, say)
    pool = pool_of(tmp_path, workers=1)

    def refuse(connection: object) -> int:
        raise RuntimeError("received 0 items of ancdata")

    monkeypatch.setattr(multiprocessing.reduction, "recv_handle", refuse)

    # When the worker dies and no replacement can be had
    with pytest.raises(FunctionError, match="died"):
        pool.invoke({"exit": True})

    # Then the next invocation fails at once, and the pool still stops
    with pytest.raises(FunctionError, match="every worker process died"):
        pool.invoke({})
    stopping = threading.Thread(target=pool.stop)
    stopping.start()
    stopping.join(10)
    assert not stopping.is_alive()
