"""The paper's experiments as named grids of runs: `python -m ptjax.experiments`
(grids.py: what each figure/table runs; families.py: the t5 or mini models, tasks and
recipe; runner.py: running, status, launch scripts)."""
