"""Users' own tasks from TSV or JSONL files with `inputs` and `targets` columns.

TSV: one example per line, `inputs<TAB>targets`; an optional first line
`inputs<TAB>targets` is a header. JSONL: one object per line with both keys.
"""

import csv
import json
from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from ptjax import files
from ptjax.data import metrics as metrics_lib
from ptjax.data.vocabularies import output_features


def read_examples(path: str) -> list[dict[str, str]]:
  """Reads a .tsv or .jsonl file; errors name the file, the line and the fix."""
  if not files.exists(path):
    raise ValueError(f"Task file {path} does not exist.")
  if not files.isfile(path):
    raise ValueError(f"Task file {path} is a directory, not a .tsv or .jsonl file.")
  try:
    return _read_examples(path)
  except UnicodeDecodeError as e:
    raise ValueError(f"Task file {path} is not UTF-8 text ({e.reason} at byte {e.start}).") \
        from None


def _read_examples(path: str) -> list[dict[str, str]]:
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
        if not isinstance(row, dict) or "inputs" not in row or "targets" not in row:
          raise ValueError(f"{path}:{n}: expected a JSON object with 'inputs' and 'targets'.")
        examples.append({"inputs": str(row["inputs"]), "targets": str(row["targets"])})
    elif path.endswith(".tsv"):
      for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if n == 1 and row == ["inputs", "targets"]:
          continue
        if len(row) != 2:
          raise ValueError(f"{path}:{n}: expected 2 tab-separated columns (inputs, targets), "
                           f"found {len(row)}.")
        examples.append({"inputs": row[0], "targets": row[1]})
    else:
      raise ValueError(f"Task file {path}: use a .tsv or .jsonl file.")
  if not examples:
    raise ValueError(f"Task file {path} holds no examples.")
  return examples


def text_task(name: str, files: Mapping[str, str], vocabulary: seqio.Vocabulary,
              metric_fns: Sequence = (metrics_lib.accuracy,)) -> str:
  """Registers (or re-registers) seqio task `name` over {split: file}; returns `name`."""
  splits = {split: read_examples(path) for split, path in files.items()}

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    rows = splits[split]
    return tf.data.Dataset.from_tensor_slices(
        {"inputs": [r["inputs"] for r in rows], "targets": [r["targets"] for r in rows]})

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=list(splits),
                                      num_input_examples={k: len(v) for k, v in splits.items()}),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary),
      metric_fns=list(metric_fns))
  return name
