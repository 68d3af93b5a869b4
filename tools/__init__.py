"""The project's own tooling: the parallel runner, the stack launcher, keygen, flake-check, the benchmarks and the
OpenAPI document.

Neither the suite nor the gateway: these modules drive both from the outside. They reach the suite's library only
through a few stable entry points (support.harness.config, support.stacks, support.database, support.tokens,
support.harness.redaction, support.harness.waits); only tools.openapi imports the gateway, to read its API.
scripts/ holds a thin shim per tool; pyproject.toml names the console entry points.
"""
