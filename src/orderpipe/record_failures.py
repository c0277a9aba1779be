"""Why a batch record failed, in one line for the logs."""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch.exceptions import ExceptionInfo
from pydantic import ValidationError


def failure_reason(exception: ExceptionInfo) -> str:
    """`Type: message`, then the AWS error behind a domain error.

    Validation errors name each field and rule but never echo the input (customer data).
    """
    error = exception[1]
    if error is None:
        return "unknown error"
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        return f"ValidationError: {problems}"
    reason = f"{type(error).__name__}: {error}"
    if error.__cause__ is not None:
        reason += f" (caused by {type(error.__cause__).__name__}: {error.__cause__})"
    return reason
