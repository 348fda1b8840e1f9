r"""Converts frozen T5 checkpoints between T5X and Hugging Face formats.

  python -m ptjax.convert --input gs://t5-data/pretrained_models/t5x/t5_1_1_small/checkpoint_1000000 \
      --output /tmp/t5_1_1_small_hf --format hf --config small
  python -m ptjax.convert --input /tmp/t5_1_1_small_hf --output /tmp/small_t5x --format t5x

T5X checkpoints carry no architecture, so writing HF from T5X needs --config: a preset
name (tiny, small, base, large, xl, xxl) or a JSON file of `T5Config` fields.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

from ptjax import checkpoints, files
from ptjax.model import PRESETS, T5Config, count_params, preset


def resolve_config(spec: Optional[str]) -> Optional[T5Config]:
  """A preset name or a JSON file of T5Config fields -> T5Config (None -> None)."""
  if spec is None:
    return None
  if spec in PRESETS:
    return preset(spec)
  if spec.endswith(".json") and os.path.isfile(spec):
    with open(spec) as f:
      fields = json.load(f)
    known = {f.name for f in dataclasses.fields(T5Config)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"--config {spec}: unknown T5Config field(s) {unknown}; "
                       f"known fields: {sorted(known)}.")
    return T5Config(**fields)
  raise ValueError(f"--config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an "
                   f"existing .json file of T5Config fields.")


REQUEST_FILE = "ptjax_convert.json"


def _earlier_request(output: str) -> Optional[dict]:
  path = files.join(output, REQUEST_FILE)
  if not files.isfile(path):
    return None
  return files.read_json(path)


def convert(input_path: str, output: str, fmt: str, config: Optional[str] = None,
            dtype: Optional[str] = None, overwrite: bool = False) -> dict:
  """Reads any supported checkpoint and writes it in `fmt` ('t5x' or 'hf'); returns a summary."""
  if fmt not in ("t5x", "hf"):
    raise ValueError(f"--format {fmt!r}: use 't5x' or 'hf'.")
  request = {"input": input_path, "format": fmt, "config": config, "dtype": dtype}
  if (not overwrite and files.exists(output)
      and (not files.isdir(output) or files.listdir(output))
      and _earlier_request(output) != request):
    raise ValueError(f"--output {output} already exists and is not empty (and is not this "
                     f"same conversion, run before); choose a new folder or pass "
                     f"--overwrite.")
  start = time.perf_counter()
  model_config, params = checkpoints.load_checkpoint(input_path, resolve_config(config))
  loaded = time.perf_counter()
  if fmt == "hf":
    if model_config is None:
      raise ValueError("Writing a Hugging Face checkpoint from a T5X one needs --config (a "
                       "preset name or a JSON file of T5Config fields): T5X checkpoints carry "
                       "no architecture.")
    checkpoints.save_hf(params, model_config, output, dtype)
  else:  # The step goes along: T5X's TRAIN_STEPS count from it.
    checkpoints.save_t5x(params, output, dtype=dtype,
                         step=checkpoints.checkpoint_step(input_path))
  # Running the same command again replaces this output; any other command is refused.
  files.write_json(files.join(output, REQUEST_FILE), request)
  return {"input": input_path, "input_format": checkpoints.detect_format(input_path),
          "output": output, "format": fmt,
          "parameters": count_params(model_config) if model_config else None,
          "load_s": round(loaded - start, 3),
          "write_s": round(time.perf_counter() - loaded, 3)}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m ptjax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True, help="T5X folder/file or HF folder (local or gs://).")
  parser.add_argument("--output", required=True, help="Folder to write.")
  parser.add_argument("--format", required=True, choices=("t5x", "hf"))
  parser.add_argument("--config", help="Preset name or T5Config JSON (needed for T5X -> HF).")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                      help="Cast the weights on the way (default: keep).")
  parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty --output.")
  args = parser.parse_args(argv)
  try:
    summary = convert(args.input, args.output, args.format, args.config, args.dtype,
                      args.overwrite)
  except ValueError as e:  # CheckpointError included: one actionable line, no traceback.
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
