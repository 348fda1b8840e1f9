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
import shutil
import subprocess
import sys
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

from ptjax.data import metrics
from ptjax.experiments.grids import Cell, Run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gfile():
  import tensorflow as tf  # gs:// roots (TPU pods write to buckets).
  return tf.io.gfile


def exists(path: str) -> bool:
  return _gfile().exists(path)


def cell_done(cell: Cell) -> bool:
  return exists(os.path.join(cell.model_dir, "cell.json"))


def run_done(run: Run) -> bool:
  return exists(os.path.join(run.model_dir, run.done_file))


def status(cells: Sequence[Cell]) -> dict[str, list[str]]:
  """{'done': [...], 'started': [...], 'pending': [...]} cell names."""
  out = {"done": [], "started": [], "pending": []}
  for cell in cells:
    key = ("done" if cell_done(cell) else
           "started" if any(exists(r.model_dir) for r in cell.runs) else "pending")
    out[key].append(cell.name)
  return out


def missing_requirements(cells: Sequence[Cell]) -> list[str]:
  """Checkpoints the cells need that do not exist, with the command that makes each."""
  out = {}
  for cell in cells:
    for path, how in cell.requires:
      if path not in out and not path.startswith("gs://") and not exists(path):
        out[path] = how
  return [f"{path} (make it: {how})" for path, how in out.items()]


def best_eval(model_dir: str, best_metric: Optional[str],
              metrics_file: str = "metrics.jsonl") -> dict:
  """The eval row of `metrics_file` (a training run's metrics.jsonl, or a standalone eval's
  eval/metrics.jsonl) with the best `best_metric` (the last row when it is absent), as the
  paper reports dev scores with early stopping."""
  path = os.path.join(model_dir, metrics_file)
  with _gfile().GFile(path) as f:
    lines = f.read().split("\n")
  rows = []
  for i, line in enumerate(lines):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        if i != len(lines) - 1:  # Only a torn last line (a killed append) is skipped.
          raise ValueError(f"{path}, line {i + 1}, is not valid JSON.") from None
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
    with _gfile().GFile(os.path.join(last.model_dir, "ensemble.json")) as f:
      metrics = json.load(f)
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
  gs:// bucket are not indexed: probing every run there would cost a request each)."""
  out = {}
  for cell in cells:
    for run in cell.runs:
      if not run.model_dir.startswith("gs://") and signature(run) not in out and run_done(run):
        out[signature(run)] = run.model_dir
  return out


def reuse(source: str, model_dir: str) -> None:
  """MODEL_DIR <- a copy of a finished identical run's folder (without its cell.json).

  A copy, never hard links: continuing or re-evaluating the reused run must not write
  into the original run's files (root ignores read-only bits, so links cannot be made
  safe). Local roots only, where runs are small enough to copy."""
  shutil.copytree(source, model_dir, ignore=shutil.ignore_patterns("cell.json"))


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
      if source and source != run.model_dir and not exists(run.model_dir):
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
      with _gfile().GFile(os.path.join(cell.model_dir, "cell.json"), "w") as f:
        f.write(json.dumps(cell_result(cell), indent=1))
  return counts


def load_results(root: str, grid: str) -> list[dict]:
  """Every cell.json under `root/grid`, in path order."""
  gfile = _gfile()
  paths = sorted(os.path.join(folder, "cell.json")
                 for folder, _, files in gfile.walk(os.path.join(root, grid))
                 if "cell.json" in files)
  out = []
  for path in paths:
    with gfile.GFile(path) as f:
      text = f.read()
    try:
      out.append(json.loads(text))
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e.msg}): delete it and `run` the cell "
                       f"again (its runs are kept and not re-run).") from None
  return out


# --- Launch scripts --------------------------------------------------------------------

INSTALL = {"tpu": 'pip install -e . "jax[tpu]"', "gpu": 'pip install -e . "jax[cuda12]"'}


def launch_script(grid_args: Sequence[str], target: str, *, host: str = "",
                  zone: str = "", project: str = "", repo_dir: str = "~/ptjax") -> str:
  """A bash script that runs `python -m ptjax.experiments run <grid_args>` on a TPU VM or
  pod slice (every worker, multi-host) or on one GPU host, after installing ptjax."""
  experiments = shlex.join(["python", "-m", "ptjax.experiments", "run", *grid_args])
  if target == "tpu":
    remote = (f"cd {repo_dir} && {INSTALL['tpu']} && {experiments} "
              f"--flags=--initialize_distributed")
    where = (f'TPU="${{TPU:-{host}}}" ZONE="${{ZONE:-{zone}}}" '
             f'PROJECT="${{PROJECT:-{project}}}"')
    body = (f"{where}\n"
            "# Every worker runs the same plan; each run is one multi-host program.\n"
            'gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --project "$PROJECT" '
            f"--worker=all \\\n  --command {shlex.quote(remote)}\n")
  elif target == "gpu":
    remote = (f"cd {repo_dir} && {INSTALL['gpu']} && nohup {experiments} "
              "> experiments.log 2>&1 &")
    body = (f'HOST="${{HOST:-{host}}}"\n'
            f'ssh "$HOST" {shlex.quote(remote)}\n'
            'echo "running on $HOST: ssh $HOST tail -f ' + repo_dir + '/experiments.log"\n')
  else:
    raise ValueError(f"Unknown launch target {target!r}: 'tpu' or 'gpu'.")
  return ("#!/usr/bin/env bash\n"
          f"# Written by `python -m ptjax.experiments launch`: {' '.join(grid_args)} on {target}.\n"
          "# ptjax must be cloned at the same path on the host(s); finished cells are skipped.\n"
          "set -euo pipefail\n" + body)
