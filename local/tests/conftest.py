"""The runner's tests: the shared helpers come from the runner's testing plugin."""

pytest_plugins = ["orderpipe_local.testing"]
