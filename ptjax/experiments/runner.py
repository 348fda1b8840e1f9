"""Running a grid's cells: locally one after another (finished runs skipped, so a killed
grid resumes; the trainer itself resumes a killed run from its checkpoints), or from a
launch script on a TPU VM / pod slice or a GPU host.

Each finished cell leaves `<cell>/cell.json`: its coordinates and the metrics of its last
run at the best evaluation (the paper's early stopping on the dev set), read by `table`.

Grids share points (Figure 1's prompt-tuning run is also the default of every Figure 3
panel and Table 3's first member): a run identical to a finished one of another grid,
MODEL_DIR aside, is reused, its folder copied, not run again.
"""

import json
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

from ptjax import files
from ptjax.data import metrics
from ptjax.experiments.grids import Cell, Run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cell_done(cell: Cell) -> bool:
  return files.exists(files.join(cell.model_dir, "cell.json"))


def run_done(run: Run) -> bool:
  return files.exists(files.join(run.model_dir, run.done_file))


def status(cells: Sequence[Cell]) -> dict[str, list[str]]:
  """{'done': [...], 'started': [...], 'pending': [...]} cell names."""
  out = {"done": [], "started": [], "pending": []}
  for cell in cells:
    key = ("done" if cell_done(cell) else
           "started" if any(files.exists(r.model_dir) for r in cell.runs) else "pending")
    out[key].append(cell.name)
  return out


def missing_requirements(cells: Sequence[Cell]) -> list[str]:
  """Checkpoints the cells need that do not exist, with the command that makes each."""
  out = {}
  for cell in cells:
    for path, how in cell.requires:
      if path not in out and not files.exists(path):
        out[path] = how
  return [f"{path} (make it: {how})" for path, how in out.items()]


def best_eval(model_dir: str, best_metric: Optional[str],
              metrics_file: str = "metrics.jsonl") -> dict:
  """The eval row of `metrics_file` (a training run's metrics.jsonl, or a standalone eval's
  eval/metrics.jsonl) with the best `best_metric` (the last row when it is absent), as the
  paper reports dev scores with early stopping."""
  path = files.join(model_dir, metrics_file)
  rows = files.read_jsonl(path)  # A torn last line (a killed append) is skipped.
  rows = [r for r in rows if r.get("kind") == "eval"] or rows
  if not rows:
    raise ValueError(f"{path} has no evaluation.")
  scored = [r for r in rows if best_metric in r]
  if not scored:
    return rows[-1]
  sign = -1 if metrics.lower_is_better(best_metric) else 1
  return max(scored, key=lambda r: (sign * r[best_metric], r.get("step", 0)))


def cell_result(cell: Cell) -> dict:
  last = cell.runs[-1]
  if last.done_file == "ensemble.json":
    metrics = files.read_json(files.join(last.model_dir, "ensemble.json"))
  else:
    best = dict(last.bindings).get("BEST_METRIC")
    metrics = best_eval(last.model_dir, best and best.strip("'\""),
                        last.done_file if last.done_file.endswith(".jsonl") else
                        "metrics.jsonl")
  return {"grid": cell.grid, "cell": cell.name, "coords": dict(cell.coords),
          "seed": cell.seed, "metrics": metrics}


def unfinished(cells: Sequence[Cell]) -> list[tuple[Cell, list[Run]]]:
  """(cell, its runs still to do) of unfinished cells; a run shared by cells (an LM
  adaptation stage) is done by the first."""
  planned, plan = set(), []
  for cell in cells:
    if not cell_done(cell):
      runs = [r for r in cell.runs if r.model_dir not in planned and not run_done(r)]
      planned.update(r.model_dir for r in runs)
      plan.append((cell, runs))
  return plan


def signature(run: Run) -> str:
  """What a run computes: its gin files and bindings, MODEL_DIR aside."""
  return json.dumps([list(run.gin_files), sorted(run.bindings), sorted(run.grid_bindings),
                     run.done_file])


def finished_runs(cells: Iterable[Cell]) -> dict[str, str]:
  """{signature: MODEL_DIR} of the finished runs among `cells` on local disk (runs in a
  gs:// bucket are not indexed: probing every run there would cost a request each, and
  copying a run folder inside a bucket is left to `gsutil`)."""
  out = {}
  for cell in cells:
    for run in cell.runs:
      if (not files.is_remote(run.model_dir) and signature(run) not in out
          and run_done(run)):
        out[signature(run)] = run.model_dir
  return out


def reuse(source: str, model_dir: str) -> None:
  """MODEL_DIR <- a copy of a finished identical run's folder (without its cell.json).

  A copy, never hard links: continuing or re-evaluating the reused run must not write
  into the original run's files (root ignores read-only bits, so links cannot be made
  safe). Local roots only, where runs are small enough to copy."""
  files.copytree(source, model_dir, skip=("cell.json",))


def run_cells(cells: Sequence[Cell], *, flags: Sequence[str] = (),
              python: str = sys.executable, log: Callable[[str], None] = print,
              write_results: bool = True,
              finished: Optional[Mapping[str, str]] = None) -> dict[str, int]:
  """Runs every unfinished run of every unfinished cell, in order; stops at the first
  failure (its command and log tail are raised). `flags` go to each ptjax.main run (e.g.
  --initialize_distributed on a pod slice). The plan is fixed before the first run, so
  every host of a pod slice runs the same sequence. `finished` ({signature: MODEL_DIR},
  `finished_runs` of other grids) names runs to reuse instead of running again."""
  missing = missing_requirements(cells)
  if missing:
    raise FileNotFoundError("Missing checkpoints:\n  " + "\n  ".join(missing))
  plan = unfinished(cells)
  counts = {"cells": len(cells), "skipped": len(cells) - len(plan), "runs": 0, "reused": 0}
  for i, (cell, runs) in enumerate(plan, 1):
    for run in runs:
      source = (finished or {}).get(signature(run))
      if (source and source != run.model_dir and not files.is_remote(run.model_dir)
          and not files.exists(run.model_dir)):
        reuse(source, run.model_dir)
        log(f"[{i}/{len(plan)}] {cell.grid} {cell.name}: reused {source} (identical run)")
        counts["reused"] += 1
        continue
      argv = [python] + run.argv()[1:] + list(flags)
      log(f"[{i}/{len(plan)}] {cell.grid} {cell.name}: {run.command()}")
      tic = time.perf_counter()
      proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
      if proc.returncode != 0:
        raise RuntimeError(f"{cell.name}: run failed ({proc.returncode}):\n"
                           f"{shlex.join(argv)}\n{proc.stdout[-3000:]}")
      log(f"    done in {time.perf_counter() - tic:.0f} s")
      counts["runs"] += 1
    if write_results:
      files.write_json(files.join(cell.model_dir, "cell.json"), cell_result(cell), indent=1)
  return counts


def load_results(root: str, grid: str) -> list[dict]:
  """Every cell.json under `root/grid`, in path order."""
  paths = sorted(files.join(folder, "cell.json")
                 for folder, names in files.walk(files.join(root, grid))
                 if "cell.json" in names)
  out = []
  for path in paths:
    text = files.read_text(path)
    try:
      out.append(json.loads(text))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e.msg}): delete it and `run` the cell "
                       f"again (its runs are kept and not re-run).") from None
  return out
