"""The paper's comparison on one task, as one table: majority class, prompt design,
prompt tuning and model tuning, each with its score, trainable parameters and wall time
(gin/runs/demo.gin). The three model rows are plain run functions that gin configures
under scopes (`prompt_design/evaluation.evaluate`, `prompt_tuning/trainer.train`,
`model_tuning/trainer.train`); this module only calls them and tabulates.
"""

import collections
import dataclasses
import time
from typing import Callable, Mapping, Optional

from ptjax import files
from ptjax.data import pipeline
from ptjax.train import evaluation


@dataclasses.dataclass
class Row:
  method: str
  score: float
  trainable_parameters: int
  wall_s: float


def majority_class(task_name: str, metric: str, split: str = "validation",
                   max_examples: Optional[int] = None, train_examples: int = 1000) -> float:
  """`metric` of always predicting the most frequent target of the first
  `train_examples` train examples, scored like a model's predictions on (the first
  `max_examples` of) `split`."""
  task = pipeline.get_task(task_name)
  lengths = {"inputs": 1, "targets": 1}  # Only the raw text fields are used.
  train = pipeline.eval_examples(task_name, lengths, "train", train_examples)
  counts = collections.Counter(evaluation.as_text(ex["targets_pretokenized"]) for ex in train)
  guess = counts.most_common(1)[0][0]
  examples = pipeline.eval_examples(task_name, lengths, split, max_examples)
  results = evaluation.score_texts(task, examples, [guess] * len(examples))
  if metric not in results:
    raise ValueError(f"BEST_METRIC={metric!r} is not a metric of {task_name}; it has "
                     f"{sorted(results)}.")
  return float(results[metric])


def format_table(rows: list[Row], metric: str) -> str:
  """Markdown table, one row per method (scores as the metric reports them: ptjax's
  metrics are percentages)."""
  lines = [f"| method | {metric} | trainable parameters | wall time (s) |",
           "|---|---:|---:|---:|"]
  lines += [f"| {r.method} | {r.score:.1f} | {r.trainable_parameters:,} | "
            f"{r.wall_s:.0f} |" for r in rows]
  return "\n".join(lines)


def compare(*, model_dir: str, mixture_or_task_name: str, metric: str,
            max_eval_examples: Optional[int] = None,
            prompt_design: Optional[Callable[..., Mapping]] = None,
            prompt_tuning: Optional[Callable[..., Mapping]] = None,
            model_tuning: Optional[Callable[..., Mapping]] = None) -> list[Row]:
  """Runs each method (those given) in `model_dir/<method>` and prints the table; writes
  it to `model_dir/comparison.md` and `.json`. Scores are `metric` on the
  validation split (its first `max_eval_examples`, as the runs are bound to use); wall
  time includes loading, compiling, training and evaluation. Run again in the same folder,
  finished runs report their results and rows equal to the earlier table's keep its wall
  times: the same command prints the same table."""
  earlier = {}  # A run of the same comparison before: its rows keep their wall times.
  path = files.join(model_dir, "comparison.json")
  if files.exists(path):
    record = files.read_json(path)
    if record.get("task") == mixture_or_task_name and record.get("metric") == metric:
      earlier = {r["method"]: Row(**r) for r in record["rows"]}
  rows = []
  tic = time.perf_counter()
  rows.append(Row("majority class", majority_class(mixture_or_task_name, metric,
                                                   max_examples=max_eval_examples), 0,
                  time.perf_counter() - tic))
  for name, fn in (("prompt design", prompt_design), ("prompt tuning", prompt_tuning),
                   ("model tuning", model_tuning)):
    if fn is None:
      continue
    print(f"== {name} ==", flush=True)
    tic = time.perf_counter()
    results = fn(model_dir=files.join(model_dir, name.replace(" ", "_")))
    if metric not in results:
      raise ValueError(f"{name} returned no {metric!r} (it has {sorted(results)}): set "
                       f"BEST_METRIC to a metric of {mixture_or_task_name}.")
    rows.append(Row(name, float(results[metric]), int(results.get("trainable_parameters", 0)),
                    time.perf_counter() - tic))
  for i, row in enumerate(rows):
    # The same result as the earlier run (a finished run reports it again): the table keeps
    # the wall time it took, so running the demo twice prints the same table.
    old = earlier.get(row.method)
    if old is not None and (old.score, old.trainable_parameters) == (row.score,
                                                                     row.trainable_parameters):
      rows[i] = old
  table = format_table(rows, metric)
  files.write_text(files.join(model_dir, "comparison.md"),
                   f"{mixture_or_task_name}, validation split\n\n{table}\n")
  files.write_json(files.join(model_dir, "comparison.json"),
                   {"task": mixture_or_task_name, "metric": metric,
                    "rows": [dataclasses.asdict(r) for r in rows]}, indent=1)
  print(f"\n{mixture_or_task_name} (validation)\n{table}", flush=True)
  return rows
