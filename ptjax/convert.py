r"""Converts frozen T5 checkpoints between T5X and Hugging Face formats.

  python -m ptjax.convert --input gs://t5-data/pretrained_models/t5x/t5_1_1_small/checkpoint_1000000 \
      --output /tmp/t5_1_1_small_hf --format hf --config small
  python -m ptjax.convert --input /tmp/t5_1_1_small_hf --output /tmp/small_t5x --format t5x

T5X checkpoints carry no architecture, so writing HF from T5X needs --config: a preset
name (tiny, small, base, large, xl, xxl) or a JSON file of `T5Config` fields.

--layout scanned|unscanned writes the layer stacks in flaxformer's scanned layout
(`encoder/encoder/...`, a 'layers' axis at position 1; `T5Config.scan_layers=True`) or
T5X's per-layer one (`encoder/layers_{i}/...`); default: the input's. The input's layout
is read from its parameter names. Conversions are bit-exact (stack / slice). Hugging
Face has no scanned layout: HF output is always unscanned.

  python -m ptjax.convert --input /tmp/small_t5x --output /tmp/small_scanned --format t5x \
      --layout scanned
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from typing import Optional, Sequence

from ptjax import checkpoints, console, files
from ptjax.checkpoints import layout as layouts
from ptjax.checkpoints.validate import check_params, flat
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


LAYOUTS = ("scanned", "unscanned")


def convert(input_path: str, output: str, fmt: str, config: Optional[str] = None,
            dtype: Optional[str] = None, overwrite: bool = False,
            layout: Optional[str] = None) -> dict:
  """Reads any supported checkpoint and writes it in `fmt` ('t5x' or 'hf') and `layout`
  ('scanned', 'unscanned'; None: the input's); returns a summary."""
  if fmt not in ("t5x", "hf"):
    raise ValueError(f"--format {fmt!r}: use 't5x' or 'hf'.")
  if layout not in (None,) + LAYOUTS:
    raise ValueError(f"--layout {layout!r}: use 'scanned' or 'unscanned'.")
  if fmt == "hf" and layout == "scanned":
    raise ValueError("--layout scanned with --format hf: Hugging Face T5 has no scanned "
                     "layout; write --format t5x, or drop --layout.")
  source = input_path if files.isdir(input_path) else files.dirname(input_path)
  if files.abspath(source).rstrip("/") == files.abspath(output).rstrip("/"):
    raise ValueError(f"--output {output} is the input's own folder: writing there replaces "
                     f"the checkpoint being read; choose a new folder.")
  request = {"input": input_path, "format": fmt, "config": config, "dtype": dtype,
             "layout": layout}
  if (not overwrite and files.exists(output)
      and (not files.isdir(output) or files.listdir(output))
      and _earlier_request(output) != request):
    raise ValueError(f"--output {output} already exists and is not empty (and is not this "
                     f"same conversion, run before); choose a new folder or pass "
                     f"--overwrite.")
  model_config = resolve_config(config)
  if model_config is not None and model_config.scan_layers:
    raise ValueError(f"--config {config} sets scan_layers: the output's layout is --layout's "
                     f"and the input's is read from its names; drop scan_layers.")
  start = time.perf_counter()
  # Loaded unchecked: the input's layout is known only from its names; checked below.
  loaded_config, params = checkpoints.load_checkpoint(input_path)
  model_config = model_config or loaded_config
  input_scanned = layouts.is_scanned(flat(params))
  scanned = input_scanned if layout is None and fmt == "t5x" else layout == "scanned"
  params = layouts.to_layout(params, scanned, model_config, f"checkpoint {input_path}")
  if model_config is not None:
    check_params(params, model_config.replace(scan_layers=scanned),
                 f"checkpoint {input_path}")
  loaded = time.perf_counter()
  if fmt == "hf" and model_config is None:
    raise ValueError("Writing a Hugging Face checkpoint from a T5X one needs --config (a "
                     "preset name or a JSON file of T5Config fields): T5X checkpoints carry "
                     "no architecture.")
  step = checkpoints.checkpoint_step(input_path)  # T5X's TRAIN_STEPS count from it.
  input_format = checkpoints.detect_format(input_path)
  _remove_earlier_checkpoint(output)  # Only now: the input is read, nothing fails before.
  if fmt == "hf":
    checkpoints.save_hf(params, model_config, output, dtype)
  else:
    checkpoints.save_t5x(params, output, dtype=dtype, step=step)
  # Running the same command again replaces this output; any other command is refused.
  files.write_json(files.join(output, REQUEST_FILE), request)
  return {"input": input_path, "input_format": input_format,
          "input_layout": LAYOUTS[not input_scanned], "output": output, "format": fmt,
          "layout": LAYOUTS[not scanned],
          "parameters": count_params(model_config) if model_config else None,
          "load_s": round(loaded - start, 3),
          "write_s": round(time.perf_counter() - loaded, 3)}


def _is_checkpoint_file(name: str) -> bool:
  """What a T5X or HF checkpoint writer puts in a folder (and this module's request)."""
  return (name.startswith("target.") or name.startswith("model.safetensors")
          or re.fullmatch(r"model-\d+-of-\d+\.safetensors", name) is not None
          or name in (checkpoints.CHECKPOINT_FILE, "config.json", REQUEST_FILE))


def _remove_earlier_checkpoint(output: str) -> None:
  """Removes an earlier checkpoint's files from `output` (a rerun, --overwrite): a scanned
  conversion over an unscanned one must not leave the old layer arrays beside the new ones,
  nor T5X files beside HF ones. Other files are the user's and stay."""
  if not files.isdir(output):
    return
  for name in files.listdir(output):
    if _is_checkpoint_file(name):
      path = files.join(output, name)
      if files.isdir(path):
        files.rmtree(path)
      else:
        files.remove(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = console.ArgumentParser(prog="python -m ptjax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True, help="T5X folder/file or HF folder (local or gs://).")
  parser.add_argument("--output", required=True, help="Folder to write.")
  parser.add_argument("--format", required=True, choices=("t5x", "hf"))
  parser.add_argument("--config", help="Preset name or T5Config JSON (needed for T5X -> HF).")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                      help="Cast the weights on the way (default: keep).")
  parser.add_argument("--layout", choices=LAYOUTS,
                      help="Layer layout of the output (default: the input's; HF: unscanned).")
  parser.add_argument("--overwrite", action="store_true", help="Allow a non-empty --output.")
  args = parser.parse_args(argv)
  try:
    summary = convert(args.input, args.output, args.format, args.config, args.dtype,
                      args.overwrite, args.layout)
  except ValueError as e:  # CheckpointError included: one actionable line, no traceback.
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
