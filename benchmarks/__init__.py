"""Benchmarks: run from the repository root as modules (`.venv/bin/python -m benchmarks.<name>`),
so they share the test support (emulators, synthetic history) without it being installed."""
