"""The paper's experiments as named grids of runs: `python -m ptjax.experiments` (grids.py:
what each figure/table runs; runner.py: running, status, launch scripts)."""
