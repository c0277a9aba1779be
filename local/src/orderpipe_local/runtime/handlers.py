"""Load a function's handler from its folder, as the Lambda runtime does."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]


def load_handler(code_dir: Path, handler: str, module_alias: str) -> Handler:
    """`handler` is the template's `Handler` ("app.lambda_handler"); `code_dir` its CodeUri.

    Each function's `app.py` is loaded under its own module name (`module_alias`), so three
    functions whose modules are all called `app` can live in one process.
    """
    module_name, _, function_name = handler.rpartition(".")
    path = code_dir / (module_name.replace(".", "/") + ".py")
    if module_alias in sys.modules:
        module = sys.modules[module_alias]
    else:
        spec = importlib.util.spec_from_file_location(module_alias, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_alias] = module
        spec.loader.exec_module(module)
    function: Handler = getattr(module, function_name)
    return function
