"""Users' own tasks from TSV or JSONL files with `inputs` and `targets` columns.

TSV: one example per line, `inputs<TAB>targets`; an optional first line
`inputs<TAB>targets` is a header. JSONL: one object per line with both keys.

Inference reads inputs alone (`inputs_task`, gin/tasks/infer_file.gin: INFER_FILE): a TSV
line may be `inputs` only (header `inputs`), a JSONL object may lack `targets`. Such a
split has empty targets; evaluation and training refuse it (`inputs_only_file`).
"""

import csv
import json
from typing import Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from ptjax import files
from ptjax.data import metrics as metrics_lib
from ptjax.data.vocabularies import output_features


# {(task name, split): file} of the splits registered from inputs-only files.
_INPUTS_ONLY: dict[tuple[str, str], str] = {}


def read_examples(path: str, targets: bool = True) -> list[dict[str, str]]:
  """Reads a .tsv or .jsonl file; errors name the file, the line and the fix.

  `targets=False` (inference): rows may hold inputs only; they come back without
  'targets'."""
  if not files.exists(path):
    raise ValueError(f"Task file {path} does not exist.")
  if not files.isfile(path):
    raise ValueError(f"Task file {path} is a directory, not a .tsv or .jsonl file.")
  try:
    return _read_examples(path, targets)
  except UnicodeDecodeError as e:
    raise ValueError(f"Task file {path} is not UTF-8 text ({e.reason} at byte {e.start}).") \
        from None


def _read_examples(path: str, targets: bool = True) -> list[dict[str, str]]:
  examples = []
  with files.open_read(path) as f:
    if path.endswith(".jsonl"):
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{n}: not JSON ({e.msg}).") from None
        if not isinstance(row, dict) or "inputs" not in row or (targets and "targets" not in row):
          raise ValueError(f"{path}:{n}: expected a JSON object with 'inputs' and 'targets'" +
                           ("." if targets else " (or 'inputs' alone)."))
        example = {"inputs": str(row["inputs"])}
        if "targets" in row:
          example["targets"] = str(row["targets"])
        examples.append(example)
    elif path.endswith(".tsv"):
      for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if n == 1 and row in (["inputs", "targets"], ["inputs"]):
          continue
        if len(row) == 2:
          examples.append({"inputs": row[0], "targets": row[1]})
        elif len(row) == 1 and not targets:
          examples.append({"inputs": row[0]})
        else:
          raise ValueError(f"{path}:{n}: expected 2 tab-separated columns (inputs, targets)" +
                           ("" if targets else " or 1 (inputs)") + f", found {len(row)}.")
    else:
      raise ValueError(f"Task file {path}: use a .tsv or .jsonl file.")
  if not examples:
    raise ValueError(f"Task file {path} holds no examples.")
  return examples


def text_task(name: str, files: Mapping[str, str], vocabulary: seqio.Vocabulary,
              metric_fns: Sequence = (metrics_lib.accuracy,)) -> str:
  """Registers (or re-registers) seqio task `name` over {split: file}; returns `name`."""
  return _register(name, {split: read_examples(path) for split, path in files.items()},
                   vocabulary, metric_fns)


def inputs_task(name: str, path: str, vocabulary: seqio.Vocabulary, split: str = "infer",
                metric_fns: Sequence = (metrics_lib.accuracy,)) -> str:
  """Registers seqio task `name` whose `split` is the inputs of `path` (INFER_FILE: a TSV /
  JSONL file whose targets are optional and never read; gin/tasks/infer_file.gin), for
  gin/runs/infer.gin. Rows without targets get empty ones; evaluating or training on a
  file that has them is refused (`inputs_only_file`)."""
  rows = read_examples(path, targets=False)
  _register(name, {split: [{"inputs": r["inputs"], "targets": r.get("targets", "")}
                           for r in rows]}, vocabulary, metric_fns)
  if any("targets" not in r for r in rows):
    _INPUTS_ONLY[(name, split)] = path
  return name


def inputs_only_file(task_name: str, split: str) -> Optional[str]:
  """The file of `task_name`'s `split` when it was registered from inputs alone (some row
  has no targets), else None."""
  return _INPUTS_ONLY.get((task_name, split))


def _register(name: str, splits: Mapping[str, list], vocabulary: seqio.Vocabulary,
              metric_fns: Sequence) -> str:
  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    rows = splits[split]
    return tf.data.Dataset.from_tensor_slices(
        {"inputs": [r["inputs"] for r in rows], "targets": [r["targets"] for r in rows]})

  seqio.TaskRegistry.remove(name)
  for key in [k for k in _INPUTS_ONLY if k[0] == name]:
    del _INPUTS_ONLY[key]
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=list(splits),
                                      num_input_examples={k: len(v) for k, v in splits.items()}),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary),
      metric_fns=list(metric_fns))
  return name
