"""Benchmarks and the soak: scripts run on demand (`task bench`, `task soak`), never in `test`.

Run from the repository root: `python -m bench.run`, `python -m bench.soak`. The per-service
benchmarks live in `services/<svc>/bench/` and import the helpers here (the runner puts the
repository root on their `PYTHONPATH`).
"""
