"""The template's Lambda functions, run in-process with a Lambda context."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
        )
    return functions


class Poller(Protocol):
    """An event source mapping played locally: polls a source, invokes a function."""

    name: str

    def start(self) -> None:
        """Start polling in background thread(s)."""

    def stop(self) -> None:
        """Stop polling, let the batch in flight finish (and its result be applied), then return."""

    def stats(self) -> dict[str, int]:
        """Counters for the console status line (batches, records, failures...)."""
