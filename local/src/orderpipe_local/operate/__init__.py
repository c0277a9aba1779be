"""Operator tools (`orderpipe dlq`, `orderpipe doctor`): they run against the local pipeline or a
deployed stack and need no Lambda code, so they live in the runner's package."""
