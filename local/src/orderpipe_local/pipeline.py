"""`orderpipe local`: the whole pipeline of `template.yaml` on one machine.

moto (in child processes) plays the AWS services, the template's queues, tables and topics are
created in it, the real handlers run with their template environment in worker processes (in
this one with `--workers 0`) forked by the standard library's forkserver, and the template's HTTP
API, event source mappings and email subscriptions are played by `LocalHttpApi`, the pollers and
the outbox. A function that stays unavailable (none of its environments can be started) for
`unavailable_timeout` stops the pipeline with an error naming it.

Stopping drains: the API stops accepting first, then what it accepted is carried through the
queue and the stream (bounded by a timeout) before the pollers and the endpoint stop. What is
still unfinished then (messages in a queue or a DLQ, orders stored but not announced) is written
to a left-over file that `orderpipe requeue` puts back, and the stop reports it.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Protocol, TextIO, runtime_checkable

from orderpipe.aws import clients
from orderpipe_local.apigw.events import HttpApi, http_api_from_template
from orderpipe_local.apigw.server import LocalHttpApi
from orderpipe_local.config import DEFAULT_AWS_PORT, PipelineConfig, load_local_template
from orderpipe_local.console import Console
from orderpipe_local.environment import (
    EnvVarsFile,
    apply_environment,
    aws_environment,
    function_environment,
    shared_environment,
)
from orderpipe_local.issuer import LocalIssuer
from orderpipe_local.leftovers import Leftovers, collect, from_journal, left_over_files
from orderpipe_local.moto.endpoint import AwsEndpoint, EndpointError
from orderpipe_local.runtime.functions import (
    FunctionHealth,
    FunctionState,
    Invocable,
    LocalFunction,
    Poller,
    ProcessPoolFunction,
    load_functions,
    start_forkserver,
)
from orderpipe_local.runtime.gc_pauses import freeze_survivors
from orderpipe_local.sources.dynamodb_stream import DynamoDBStreamEventSource
from orderpipe_local.sources.email_outbox import EmailOutbox
from orderpipe_local.sources.polling import arn_service, as_bool, as_int
from orderpipe_local.sources.sqs import SqsEventSource
from orderpipe_local.stack.provision import Stack, provision_stack
from orderpipe_local.stack.template import TemplateError
from orderpipe_local.state import PipelineState, remove_state
from orderpipe_local.status import PipelineMonitor, PipelineStatus

log = logging.getLogger(__name__)

# The longest a batch in flight may take: the functions' longest timeout (30 s), and some.
STOP_TIMEOUT_SECONDS = 40.0


@runtime_checkable
class Drainable(Protocol):
    """A poller that can wait until its source is empty and nothing it took is still in flight."""

    def drain(self, timeout: float) -> bool: ...


class LocalPipeline:
    def __init__(self, config: PipelineConfig, console: Console) -> None:
        self.config = config
        self.console = console
        # The seed of the faults and duplicate deliveries: the same one repeats a run's draws.
        self.fault_seed = (
            config.fault_seed if config.fault_seed is not None else random.randrange(1, 1_000_000)
        )
        self.endpoint: AwsEndpoint | None = None
        self.stack: Stack | None = None
        self.functions: dict[str, LocalFunction] = {}
        self.pools: list[ProcessPoolFunction] = []
        self.invocables: dict[str, Invocable] = {}  # each function, as the API and sources invoke it
        self.api: LocalHttpApi | None = None
        self.sources: list[Poller] = []
        self.outbox: EmailOutbox | None = None
        self.monitor: PipelineMonitor | None = None
        self.emails = 0
        self._emails_lock = threading.Lock()
        self._saved_environ: dict[str, str] | None = None
        self._saved_stdout: TextIO | None = None
        self._saved_showwarning: Callable[..., None] | None = None
        self._function_log: IO[str] | None = None
        self._started = False
        self.issuer: LocalIssuer | None = None

    @property
    def endpoint_url(self) -> str:
        if self.endpoint is None:
            raise EndpointError("the pipeline is not started")
        return self.endpoint.url

    # --- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up; on failure, take down what was started and re-raise."""
        try:
            self._start()
        except BaseException:
            self._shutdown()
            raise

    def _start(self) -> None:
        config = self.config
        assert config.journal is not None
        # A journal still there is a run's that did not stop (killed): read once the stack is up.
        previous_journal = config.journal.with_name("journal.previous.jsonl")
        if config.journal.exists():
            config.journal.replace(previous_journal)
        # moto starts in its own process while this one reads the template.
        self.endpoint = self._new_endpoint(config.aws_port)
        self.endpoint.launch()
        if config.workers >= 1:
            start_forkserver()  # its imports, in a process of its own, overlap what follows
        if config.auth:
            assert config.auth_key_file is not None
            self.issuer = LocalIssuer(config.auth_key_file, config.api_host, config.auth_port)
            self.issuer.start()
            # The template's own authorizer, with this issuer: the local API plays what it declares.
            auth = {"AuthIssuer": self.issuer.url, "AuthAudience": self.issuer.audience}
            config = replace(config, parameter_overrides=config.parameter_overrides | auth)
        template = load_local_template(config)
        env_file = EnvVarsFile.read(config.env_file) if config.env_file else None
        http_api = http_api_from_template(template)
        try:
            self.api = LocalHttpApi(http_api, None, config.api_host, config.api_port)
        except OSError as error:
            raise OSError(
                f"the API cannot listen on {config.api_host}:{config.api_port}: {error.strerror}"
            ) from error
        self.endpoint = self._endpoint_ready(self.endpoint)
        self._saved_environ = dict(os.environ)
        apply_environment(aws_environment(self.endpoint.url, template.region, self.endpoint.service_urls))

        self.stack = stack = provision_stack(template, endpoint_url=self.endpoint.url)
        if previous_journal.exists():
            self._keep_from_journal(previous_journal, "the last run did not stop (it was killed)")
        environments = {fid: function_environment(stack, fid, env_file) for fid in stack.functions()}
        if config.workers < 1:  # every function in this process: one environment for all
            apply_environment(shared_environment(stack, stack.functions(), env_file))
        clients.reset()

        # What the functions print (Powertools logs, EMF metrics) is what CloudWatch Logs would
        # hold: it goes to a file, the console is for the pipeline's own lines.
        self._redirect_function_output()
        self.functions = load_functions(stack, config.root, environments)
        # Before the API and the pollers, which invoke them: every worker process loads its handler.
        self.invocables = functions = self._function_pools(stack, http_api)
        freeze_survivors()

        self.sources = self._event_sources(stack, functions)
        stream_sources = [s for s in self.sources if isinstance(s, DynamoDBStreamEventSource)]
        queue_sources = [s for s in self.sources if isinstance(s, SqsEventSource)]
        self.monitor = PipelineMonitor(stack, self.endpoint.url, stream_sources, queue_sources)
        assert config.outbox_dir is not None
        self.outbox = EmailOutbox(stack, self.endpoint.url, config.outbox_dir, self._on_email)
        self.outbox.start()
        for source in self.sources:
            source.start()

        self.api.start(functions)
        if config.state_file is not None:
            issuer: dict[str, str] | None = None
            if self.issuer is not None:
                key_file = str(self.issuer.key_file)
                issuer = {"issuer": self.issuer.url, "audience": self.issuer.audience, "key_file": key_file}
            PipelineState.of(stack, self.endpoint.url, self.api.url, config.outbox_dir, issuer).write(
                config.state_file
            )
        self._announce(http_api)
        self._started = True

    def _function_pools(self, stack: Stack, http_api: HttpApi) -> dict[str, Invocable]:
        """Every function, each in worker processes (execution environments) of its own: those
        invoked concurrently - routed to by the API or triggered by an SQS queue - in `workers`
        of them, those triggered by a DynamoDB stream in one, as a shard is read one batch at a
        time (and a local stream has one shard). Those the API does not route to run at the
        background niceness."""
        functions: dict[str, Invocable] = dict(self.functions)
        if self.config.workers < 1:
            for function in self.functions.values():  # a handler that does not load fails the start
                function.load()
            return functions
        mappings = list(self._mappings(stack))
        workers = {function_id: 1 for function_id, _, service in mappings if service == "dynamodb"}
        behind_api = {route.function_id for route in http_api.routes}
        concurrent = behind_api | {function_id for function_id, _, service in mappings if service == "sqs"}
        workers |= dict.fromkeys(concurrent, self.config.workers)
        for function_id, mapping, service in mappings:
            # No more environments than the mapping's MaximumConcurrency lets it use.
            cap = (mapping.get("ScalingConfig") or {}).get("MaximumConcurrency")
            if service == "sqs" and cap is not None and function_id not in behind_api:
                workers[function_id] = min(workers[function_id], as_int(cap, workers[function_id]))
        for function_id in sorted(workers.keys() & self.functions.keys()):
            nice = 0 if function_id in behind_api else self.config.background_nice
            pool = ProcessPoolFunction(self.functions[function_id], workers[function_id], nice=nice)
            self.pools.append(pool)
            functions[function_id] = pool
        return functions

    def _new_endpoint(self, port: int) -> AwsEndpoint:
        config = self.config
        return AwsEndpoint(
            config.aws_host,
            port,
            config.endpoint_log,
            dynamodb_nice=config.background_nice,
            journal=config.journal,
            faults=config.faults,
            fault_seed=self.fault_seed,
        )

    def _endpoint_ready(self, endpoint: AwsEndpoint) -> AwsEndpoint:
        config = self.config
        try:
            endpoint.wait_ready()
        except EndpointError:
            if config.aws_port != DEFAULT_AWS_PORT:
                raise
            log.warning(
                "port %d is taken; the AWS endpoint uses a free port instead"
                " (events/env.local.json expects %d: `sam local --env-vars` will not reach it)",
                DEFAULT_AWS_PORT,
                DEFAULT_AWS_PORT,
            )
            endpoint = self.endpoint = self._new_endpoint(0)
            endpoint.start()
        return endpoint

    def _redirect_function_output(self) -> None:
        if self.config.function_log is None:
            return
        self.config.function_log.parent.mkdir(parents=True, exist_ok=True)
        # One run's output (not line-buffered: flushed with each status refresh, once a second).
        self._function_log = self.config.function_log.open("w", encoding="utf-8")
        self._saved_stdout = sys.stdout
        sys.stdout = self._function_log
        # Powertools warns through `warnings` (e.g. an invocation without metrics): function output too.
        self._saved_showwarning = warnings.showwarning
        log_file = self._function_log

        def show_in_function_log(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            log_file.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show_in_function_log

    def _event_sources(self, stack: Stack, functions: dict[str, Invocable]) -> list[Poller]:
        """One poller per event source mapping of the template, by the service of its source."""
        assert self.endpoint is not None
        sources: list[Poller] = []
        for function_id, mapping, service in self._mappings(stack):
            match service:
                case "sqs":
                    sources.append(
                        SqsEventSource(
                            stack,
                            mapping,
                            functions[function_id],
                            self.endpoint.url,
                            duplicate_deliveries=self.config.duplicate_deliveries,
                            seed=self.fault_seed,
                        )
                    )
                case "dynamodb":
                    function, streams_url = functions[function_id], self.endpoint.url_for("dynamodbstreams")
                    sources.append(
                        DynamoDBStreamEventSource(
                            stack, mapping, function, self.endpoint.url, streams_url=streams_url
                        )
                    )
                case _:
                    raise TemplateError(
                        f"{function_id}: event source {mapping.get('EventSourceArn')} is not run locally"
                    )
        return sources

    def _mappings(self, stack: Stack) -> Iterator[tuple[str, dict[str, Any], str]]:
        """(function id, mapping, service of its source) of each enabled event source mapping."""
        for function_id in self.functions:
            for mapping in stack.event_source_mappings(function_id):
                if as_bool(mapping.get("Enabled", True)):
                    yield function_id, mapping, arn_service(str(mapping.get("EventSourceArn", "")))

    def _on_email(self, path: Path, summary: str) -> None:
        with self._emails_lock:
            self.emails += 1
        self.console.line(f"email  {summary}  ({_relative(path)})")

    def _announce(self, http_api: HttpApi) -> None:
        assert self.stack is not None
        assert self.api is not None
        assert self.endpoint is not None
        stack, endpoint_url, line = self.stack, self.endpoint.url, self.console.line
        tables = stack.template.resources_of_type("AWS::DynamoDB::Table")
        queues = stack.template.resources_of_type("AWS::SQS::Queue")
        topics = stack.template.resources_of_type("AWS::SNS::Topic")
        width = max(len(name) for name in (*tables, *queues, *topics))
        line(
            f"orderpipe local: {stack.template.stack_name}, from template.yaml with samconfig.toml [default]"
        )
        line(f"  API           {self.api.url}")
        for route in http_api.routes:
            needs = ""
            if route.authorizer is not None:
                scopes = " or ".join(route.authorization_scopes)
                needs = f"  (token with {scopes})" if scopes else "  (token)"
            line(f"                  {route.route_key:<28} -> {route.function_id}{needs}")
        if self.issuer is not None:
            line(
                f"  auth          issuer {self.issuer.url} (JWKS {self.issuer.url}/.well-known/jwks.json),"
                f" audience {self.issuer.audience}"
            )
            line("                  TOKEN=$(orderpipe token --sub ada --scope orders/write)")
            line(f'                  curl -H "Authorization: Bearer $TOKEN" {self.api.url}/orders ...')
        if http_api.cors is not None:
            line(f"  CORS          origins {', '.join(http_api.cors.allow_origins)}")
        region = stack.template.region
        line(f"  AWS endpoint  {endpoint_url}  (region {region}; any credentials will do, e.g.)")
        first_table = stack.ref(next(iter(tables))) if tables else "TABLE"
        indent = " " * 18
        credentials = "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
        line(f"{indent}export {credentials} AWS_DEFAULT_REGION={region}")
        line(f"{indent}aws --endpoint-url {endpoint_url} dynamodb scan --table-name {first_table}")
        for group, members in (("tables", tables), ("queues", queues), ("topics", topics)):
            for logical_id in members:
                if logical_id in stack.resources:
                    line(f"  {group:<12}  {logical_id:<{width}}  {stack.ref(logical_id)}")
                    group = ""
        for source in self.sources:
            line(f"  event source  {source.name}")
        email = stack.template.parameters.get("SupportEmail", "")
        detail = stack.template.parameters.get("SupportEmailDetail", "")
        outbox = _relative(self.config.outbox_dir)
        line(f"  outbox        {outbox}  (email to {email}, SupportEmailDetail={detail})")
        line(f"  function logs {_relative(self.config.function_log)}")
        if self.config.leftover_dir is not None and (files := left_over_files(self.config.leftover_dir)):
            line(
                f"  left over     {len(files)} file(s) of what earlier stops could not finish, in"
                f" {_relative(self.config.leftover_dir)}: `orderpipe requeue FILE` puts one back"
            )
        line(
            "  state         in moto's memory: a restart forgets the orders stored and mailed and the"
            " idempotency keys; what a stop or a crash leaves unfinished is kept in a left-over file"
        )
        if self.config.faults or self.config.duplicate_deliveries:
            injected = [*self.config.faults]
            if self.config.duplicate_deliveries:
                injected.append(f"duplicate deliveries {self.config.duplicate_deliveries:g}")
            line(
                f"  faults        {', '.join(injected)}  (seed {self.fault_seed}: --fault-seed repeats them)"
            )
        line("Ctrl-C stops: the API stops accepting, what it accepted is stored and mailed, then it exits.")

    # --- run -----------------------------------------------------------------------------------

    def status(self) -> PipelineStatus:
        assert self.monitor is not None
        status = self.monitor.status(accepted=0, emails=0)
        # Read after the endpoint's counts, so that accepted >= stored on every line.
        status.accepted = self.api.stats().accepted if self.api is not None else status.accepted
        with self._emails_lock:
            status.emails = self.emails
        status.functions = self.health()
        return status

    def health(self) -> list[FunctionHealth]:
        """Each function's execution environments, in the template's order."""
        return [
            self.invocables[function_id].health()
            for function_id in self.functions
            if function_id in self.invocables
        ]

    def run(self, stop: threading.Event, refresh_seconds: float = 1.0) -> bool:
        """Show the status line until `stop` is set. False if the AWS endpoint died meanwhile, or a
        function stayed unavailable for `unavailable_timeout`."""
        while not stop.is_set():
            if self.endpoint is None or not self.endpoint.running:
                moto_log = _relative(self.config.endpoint_log)
                self.console.line(f"orderpipe local: the AWS endpoint (moto) exited; see {moto_log}")
                return False
            status = self.status()
            self.console.status(status.line())
            if (lost := self._lost_function(status.functions)) is not None:
                self.console.line(
                    f"orderpipe local: {lost.function_id} cannot run: none of its execution environments"
                    f" could be started for {lost.unavailable_seconds:.0f} s (the last attempt:"
                    f" {_last_line(lost.detail)}); stopping. See {_relative(self.config.function_log)}"
                    " and the errors above."
                )
                return False
            if self._function_log is not None:
                self._function_log.flush()
            stop.wait(refresh_seconds)
        return True

    def _lost_function(self, functions: list[FunctionHealth]) -> FunctionHealth | None:
        for health in functions:
            unavailable = health.state is FunctionState.UNAVAILABLE
            if unavailable and health.unavailable_seconds >= self.config.unavailable_timeout:
                return health
        return None

    # --- stop ----------------------------------------------------------------------------------

    def stop(self, abort: threading.Event | None = None) -> bool:
        """Stop accepting, drain what was accepted, stop everything. True if all was drained.

        `abort` (a second Ctrl-C) cuts the draining short.
        """
        abort = abort or threading.Event()
        deadline = time.monotonic() + self.config.drain_timeout
        drained = True
        try:
            if self.api is not None:
                self.console.line("stopping: the API no longer accepts orders; draining what it accepted")
                drained = self.api.close(timeout=self.config.drain_timeout)
            if self.monitor is not None and drained:
                drained = self._endpoint_alive() and self._drain(deadline, abort)
            if not drained:
                self.console.line("stopping before everything was drained: see the status above")
            if self.monitor is not None and self._endpoint_alive():
                drained = not self._keep_leftovers() and drained
            elif self.stack is not None and self.config.journal is not None:
                self._keep_from_journal(self.config.journal, "the AWS endpoint (moto) is gone")
                drained = False
        finally:
            self._shutdown()
        return drained

    def _drain(self, deadline: float, abort: threading.Event) -> bool:
        """Carry what was accepted through the pipeline, step by step: the queue's pollers until
        the queue is empty, then the stream's until it is read to its end, then the outbox.

        Messages that failed and wait out their visibility timeout are not waited for: they come
        back later or go to the DLQ, and stay in the (local) queue either way.
        """
        queue_sources = [s for s in self.sources if isinstance(s, SqsEventSource)]
        stream_sources = [s for s in self.sources if not isinstance(s, SqsEventSource)]
        outbox = [self.outbox] if self.outbox is not None else []
        for step in (queue_sources, stream_sources, outbox):
            for source in step:
                if not self._drain_one(source, deadline, abort):
                    return False
            for source in step:
                if source is not self.outbox:
                    _stop_quietly(source)  # nothing more comes its way: the step before is drained
        return True

    def _drain_one(self, source: Poller, deadline: float, abort: threading.Event) -> bool:
        if not isinstance(source, Drainable):
            return True  # stop() still finishes the batch in flight
        while True:
            self.console.status(self.status().line())
            remaining = deadline - time.monotonic()
            try:
                if source.drain(timeout=max(0.0, min(1.0, remaining))):
                    return True
            except Exception as error:  # the endpoint went away, say
                log.warning("%s could not drain: %s", source.name, error)
                return False
            if abort.is_set() or time.monotonic() >= deadline:
                return False

    def _keep_leftovers(self) -> bool:
        """Write what is unfinished to a left-over file before the endpoint's memory goes, and
        say so. True if there was anything."""
        assert self.stack is not None
        assert self.config.leftover_dir is not None
        for source in self.sources:
            _stop_quietly(source)  # nothing takes a message meanwhile
        for source in self.sources:
            if isinstance(source, SqsEventSource):
                source.return_unsettled()  # those a failed or ended invocation held: readable again
        assert self.config.journal is not None
        assert self.config.outbox_dir is not None
        try:
            leftovers = collect(self.stack, self.config.outbox_dir)
        except Exception as error:  # the endpoint failed meanwhile: nothing to read it from
            self.console.line(f"could not read what is left in the endpoint: {error}")
            self._keep_from_journal(self.config.journal, "the AWS endpoint (moto) failed")
            return True
        self.config.journal.unlink(missing_ok=True)  # what it holds is settled, or in `leftovers`
        if not leftovers:
            return False
        self._report_leftovers(leftovers, "not finished")
        return True

    def _keep_from_journal(self, journal: Path, why: str) -> None:
        """When moto's memory is gone: the journal's unfinished messages into a left-over file."""
        assert self.stack is not None
        assert self.config.outbox_dir is not None
        leftovers = from_journal(journal, self.stack, self.config.outbox_dir)
        if leftovers:
            self._report_leftovers(leftovers, f"{why}; accepted and not mailed, from its journal")
        journal.unlink(missing_ok=True)

    def _report_leftovers(self, leftovers: Leftovers, heading: str) -> None:
        assert self.config.leftover_dir is not None
        path = leftovers.write(self.config.leftover_dir)
        self.console.line(f"{heading}: {leftovers.summary()}")
        where = _relative(path)
        self.console.line(
            f"  kept in {where}; `orderpipe requeue {where}` puts it back into a running pipeline"
        )

    def _endpoint_alive(self) -> bool:
        return self.endpoint is not None and self.endpoint.running

    def _shutdown(self) -> None:
        """Stop whatever runs, in order: API, pollers (each finishes its batch), outbox, endpoint."""
        alive = self._endpoint_alive()
        stop_timeout = STOP_TIMEOUT_SECONDS if alive else 5.0  # without an endpoint, nothing to finish
        if self.api is not None:
            self.api.close(timeout=0)
        for source in self.sources:
            _stop_quietly(source, stop_timeout)
        for pool in self.pools:  # no request or batch left to invoke: end the workers
            _stop_quietly(pool, stop_timeout)
            pool.kill()  # those still stuck in an invocation
        self.pools = []
        self.invocables = {}
        if self.outbox is not None:
            _stop_quietly(self.outbox, stop_timeout)  # after the notifier: delivers what it published last
        if self.monitor is not None and self._started:
            if alive:
                self.console.status(self.status().line())
            self.console.end_status()
        if self.config.state_file is not None:
            remove_state(self.config.state_file)
        if self.issuer is not None:
            self.issuer.close()
            self.issuer = None
        if self.endpoint is not None:
            self.endpoint.stop()
        if self._saved_stdout is not None:
            sys.stdout = self._saved_stdout
            self._saved_stdout = None
        if self._saved_showwarning is not None:
            warnings.showwarning = self._saved_showwarning
            self._saved_showwarning = None
        if self._function_log is not None:
            self._function_log.close()
            self._function_log = None
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None
            clients.reset()
        self.api, self.sources, self.outbox, self.monitor, self.endpoint = None, [], None, None, None
        self._started = False


class Stoppable(Protocol):
    """A poller, the outbox, a function's workers: `stop()` finishes what is in flight."""

    def stop(self) -> None: ...


def _stop_quietly(poller: Stoppable, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop a poller, waiting at most `timeout` for its batch in flight (it may be stuck on an
    endpoint that went away; its threads are daemons and end with the process)."""

    def stop() -> None:
        try:
            poller.stop()
        except Exception:
            log.exception("%s did not stop cleanly", getattr(poller, "name", poller))

    stopping = threading.Thread(target=stop, name=f"stop {getattr(poller, 'name', poller)}", daemon=True)
    stopping.start()
    stopping.join(timeout)
    if stopping.is_alive():
        log.warning("%s did not stop within %.0f s; leaving it", getattr(poller, "name", poller), timeout)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "?"


def _relative(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
