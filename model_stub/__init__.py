"""The deterministic OpenAI-compatible model backend double the suite routes to (a test double, not part of the
gateway under test). Run it with ``python -m model_stub``; see ``model_stub/server.py`` for its API."""
