"""Benchmarks of lenstui's fast paths, each measured side by side with the slow way in one run.

    .venv/bin/python -m bench.run_all            # every benchmark (a minute or two each here)
    .venv/bin/python -m bench.bench_datapath     # one of them; --quick for a few-second smoke run
    bash bench/gpu.sh                             # the prepared GPU check (docs/PERFORMANCE.md)

Not part of the package: nothing in `engine/` or `lenstui/` imports it.
"""
