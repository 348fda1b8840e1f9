r"""Extracts the soft prompt of a run, checkpoint or adapter into a .npy file or a PEFT adapter.

  python -m ptjax.prompts.extract --input /tmp/rte_run --output /tmp/rte_prompt.npy
  python -m ptjax.prompts.extract --input gs://bucket/pt_rte/checkpoint_1103000 \
      --output /tmp/rte_adapter --format peft

--input: anything PROMPT_FILE reads. A ptjax run (MODEL_DIR, its checkpoints/ folder, one
checkpoints/<step> folder), a prompt-tuning run of google-research/prompt-tuning (its
MODEL_DIR, a T5X checkpoint_<step> holding target/encoder/prompt/prompt/prompt, its
numpy_checkpoints/ folder, numpy_checkpoints/checkpoint_<step> or the
encoder.prompt.prompt.prompt file in it), a PEFT prompt-tuning adapter folder or a .npy file.
A run gives its newest step, or --step.

--output: a .npy file ([P, d] float32), or a PEFT adapter folder (adapter_model.safetensors
+ adapter_config.json) with --format peft (the default when --output does not end in .npy).
The adapter's base_model_name_or_path names the frozen model: --base_model, else the one
the input names (a PEFT adapter's own, a ptjax run's run.json, or the run's config.gin
INITIAL_CHECKPOINT_PATH / RestoreCheckpointConfig.path, as T5X and ptjax write it).

Running the same command again leaves an identical output as it is; an output that holds
anything else is refused unless --overwrite. Prints one JSON line: what was read and written.
"""

import argparse
import io
import json
import sys
from typing import Any, Optional, Sequence

import numpy as np

from ptjax import console, files
from ptjax.prompts import io as prompt_io

FORMATS = ("npy", "peft")


class _Ref:
  """A gin `%MACRO` or `@configurable` in a parsed config.gin."""

  def __init__(self, kind: str, name: str):
    self.kind, self.name = kind, name


def _gin_bindings(text: str) -> dict[str, Any]:
  """{'MACRO': value, 'module.Configurable.param': value} of a config.gin (gin's own parser:
  nothing is imported or registered). Scoped bindings are left out."""
  import gin.config_parser  # pylint: disable=g-import-not-at-top

  class Delegate(gin.config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
      return _Ref("@", scoped_configurable_name)

    def macro(self, macro_name):
      return _Ref("%", macro_name)

  out = {}
  for statement in gin.config_parser.ConfigParser(text, Delegate()):
    if isinstance(statement, gin.config_parser.BindingStatement) and not statement.scope:
      key = statement.selector + ("." + statement.arg_name if statement.arg_name else "")
      out[key] = statement.value
  return out


def _resolve(bindings: dict, value: Any, depth: int = 0) -> Any:
  while isinstance(value, _Ref) and value.kind == "%" and depth < 20:
    value, depth = bindings.get(value.name), depth + 1
  return None if isinstance(value, _Ref) else value


def _binding(bindings: dict, *names: str) -> Any:
  """The first of `names` set (a name 'Configurable.param' also matches 'module.' prefixes)."""
  for name in names:
    for key, value in bindings.items():
      if key == name or key.endswith("." + name):
        resolved = _resolve(bindings, value)
        if isinstance(resolved, (list, tuple)) and len(resolved) == 1:
          resolved = resolved[0]
        if resolved is not None:
          return resolved
  return None


def run_info(model_dir: Optional[str], strict: bool = True) -> dict:
  """What a run folder says of its frozen model: {'base_model', 'base_model_from',
  'num_layers', 'num_heads'} (None where it says nothing). run.json first (ptjax), then
  config.gin (ptjax and T5X write the run's whole gin config there). A config.gin that
  cannot be parsed is an error naming it (`strict`), else read as saying nothing."""
  info = {"base_model": None, "base_model_from": None, "num_layers": None, "num_heads": None}
  if not model_dir:
    return info
  run_json = files.join(model_dir, "run.json")
  if files.isfile(run_json):
    path = files.read_json(run_json).get("initial_checkpoint_path")
    if path:
      info.update(base_model=path, base_model_from=run_json)
  config_gin = files.join(model_dir, "config.gin")
  if files.isfile(config_gin):
    try:
      bindings = _gin_bindings(files.read_text(config_gin))
    except (SyntaxError, ValueError) as e:
      if not strict:
        return info
      raise ValueError(f"{config_gin} cannot be parsed as gin ({' '.join(str(e).split())}); "
                       f"pass --base_model.") from None
    if info["base_model"] is None:
      path = _binding(bindings, "INITIAL_CHECKPOINT_PATH", "RestoreCheckpointConfig.path")
      if isinstance(path, str) and path:
        info.update(base_model=path, base_model_from=config_gin)
    layers = _binding(bindings, "NUM_ENCODER_LAYERS", "T5Config.num_encoder_layers",
                      "NUM_LAYERS", "T5Config.num_layers")
    heads = _binding(bindings, "NUM_HEADS", "T5Config.num_heads")
    info["num_layers"] = layers if isinstance(layers, int) else None
    info["num_heads"] = heads if isinstance(heads, int) else None
  return info


def _npy_bytes(prompt: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(prompt, np.float32), allow_pickle=False)
  return buffer.getvalue()


def _planned(prompt: np.ndarray, fmt: str, output: str, base_model: Optional[str],
             num_layers: Optional[int], num_heads: Optional[int]) -> dict[str, bytes]:
  """{path: bytes} of the output."""
  if fmt == "npy":
    return {output: _npy_bytes(prompt)}
  config = prompt_io.peft_config(prompt, num_layers=num_layers, num_heads=num_heads,
                          base_model=base_model)
  return {files.join(output, prompt_io.ADAPTER_WEIGHTS): prompt_io.peft_weights(prompt),
          files.join(output, prompt_io.ADAPTER_CONFIG):
              (json.dumps(config, indent=2) + "\n").encode("utf-8")}


def _existing_differs(output: str, fmt: str, planned: dict[str, bytes]) -> Optional[str]:
  """Why an existing `output` is not what this extraction writes (None: absent or the same)."""
  if not files.exists(output):
    return None
  if fmt == "npy":
    if files.isdir(output):
      return "is a folder"
    return None if files.read_bytes(output) == planned[output] else "holds another prompt"
  if not files.isdir(output):
    return "is a file"
  names = files.listdir(output)
  if not names:
    return None
  if sorted(names) != sorted(files.basename(p) for p in planned):
    return f"holds other files ({', '.join(names)})"
  if any(files.read_bytes(p) != data for p, data in planned.items()):
    return "holds another adapter"
  return None


def extract(input_path: str, output: str, fmt: Optional[str] = None,
            base_model: Optional[str] = None, step: Optional[int] = None,
            overwrite: bool = False) -> dict:
  """Reads the prompt of `input_path` and writes it to `output` (see the module doc);
  returns a summary. ValueError (one line, naming the file) for anything unusable."""
  fmt = fmt or ("npy" if output.endswith(".npy") else "peft")
  if fmt not in FORMATS:
    raise ValueError(f"--format {fmt!r}: use 'npy' or 'peft'.")
  if step is not None and step < 0:
    raise ValueError(f"--step {step} must be >= 0.")
  found = prompt_io.find_prompt(input_path, step)
  prompt = np.asarray(found.prompt, np.float32)
  if not np.isfinite(prompt).all():
    raise ValueError(f"{found.source}: the prompt holds non-finite values (NaN or inf); "
                     f"extract an earlier step (--step).")
  peft = found.peft_config or {}
  # Only an adapter names its frozen model; a config.gin that cannot be parsed matters only
  # when nothing else names it.
  info = (run_info(found.model_dir, strict=not (base_model or
                                                peft.get("base_model_name_or_path")))
          if fmt == "peft" else run_info(None))
  given = base_model
  if given:
    base_model, source = given, "--base_model"
  elif peft.get("base_model_name_or_path"):
    base_model = peft["base_model_name_or_path"]
    source = files.join(found.source, prompt_io.ADAPTER_CONFIG)
  else:
    base_model, source = info["base_model"], info["base_model_from"]
  num_layers = peft.get("num_layers") or info["num_layers"]
  num_heads = peft.get("num_attention_heads") or info["num_heads"]
  planned = _planned(prompt, fmt, output, base_model, num_layers, num_heads)
  why = _existing_differs(output, fmt, planned)
  if why and not overwrite:
    raise ValueError(f"--output {output} already exists and {why} (not this same "
                     f"extraction, run before); choose a new path or pass --overwrite.")
  if fmt == "npy" and files.isdir(output):
    raise ValueError(f"--output {output} is a folder: a .npy output is a file; name one "
                     f"inside it, or pass --format peft.")
  if fmt == "peft" and files.exists(output) and not files.isdir(output):
    raise ValueError(f"--output {output} is a file: a PEFT adapter is a folder; choose "
                     f"another path, or pass --format npy.")
  written = why is not None or not files.exists(output) or any(
      not files.exists(p) for p in planned)
  if written:
    for path, data in planned.items():  # Each file written whole (ptjax.files).
      files.write_bytes(path, data)
  return {"input": input_path, "kind": found.kind, "source": found.source, "step": found.step,
          "shape": list(prompt.shape), "output": output, "format": fmt,
          "base_model": base_model, "base_model_from": source, "written": written}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = console.ArgumentParser(prog="python -m ptjax.prompts.extract", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input", required=True,
                      help="A run, checkpoint, numpy checkpoint, PEFT adapter or .npy (local "
                           "or gs://).")
  parser.add_argument("--output", required=True, help="A .npy file or a PEFT adapter folder.")
  parser.add_argument("--format", choices=FORMATS,
                      help="npy or peft (default: npy when --output ends in .npy, else peft).")
  parser.add_argument("--step", type=int,
                      help="The checkpoint step of a run to extract (default: the newest).")
  parser.add_argument("--base_model",
                      help="The frozen model, for the adapter's base_model_name_or_path "
                           "(default: the one the input's run names).")
  parser.add_argument("--overwrite", action="store_true",
                      help="Replace an --output that holds something else.")
  args = parser.parse_args(argv)
  try:
    summary = extract(args.input, args.output, args.format, args.base_model, args.step,
                      args.overwrite)
  except (ValueError, OSError) as e:  # PromptFileError, CheckpointError, StorageError.
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
