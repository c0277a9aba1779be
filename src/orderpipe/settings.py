"""Where each function finds its AWS resources: environment variables set by `template.yaml`."""

from __future__ import annotations

import os
from functools import cache

from pydantic import BaseModel, ConfigDict


class MissingSetting(RuntimeError):
    """A function was deployed without an environment variable it needs."""


class Settings(BaseModel):
    """Read once per cold start. Names match the template's `Environment.Variables`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ORDERS_QUEUE_URL: str = ""
    ORDERS_TABLE_NAME: str = ""
    IDEMPOTENCY_TABLE_NAME: str = ""
    ORDERS_TOPIC_ARN: str = ""

    def require(self, name: str) -> str:
        value: str = getattr(self, name)
        if not value:
            raise MissingSetting(f"environment variable {name} is not set")
        return value

    @property
    def orders_queue_url(self) -> str:
        return self.require("ORDERS_QUEUE_URL")

    @property
    def orders_table_name(self) -> str:
        return self.require("ORDERS_TABLE_NAME")

    @property
    def idempotency_table_name(self) -> str:
        return self.require("IDEMPOTENCY_TABLE_NAME")

    @property
    def orders_topic_arn(self) -> str:
        return self.require("ORDERS_TOPIC_ARN")


@cache
def settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
