"""Prompt files: `.npy` [P, embed], PEFT prompt-tuning adapters, ptjax runs, and the
artifacts of the official prompt-tuning code (google-research/prompt-tuning on T5X).

A PEFT adapter folder holds `adapter_model.safetensors` ({'prompt_embeddings': [P, d]})
and `adapter_config.json` (peft_type PROMPT_TUNING, one transformer submodule: the prompt
goes to the encoder only, as in the paper; `base_model_name_or_path`: the frozen model).

The official code writes, in its MODEL_DIR (`prompt_tuning/train/utils.py`, Checkpointer):
  checkpoint_<step>/   a T5X checkpoint: the frozen model *and* the prompt,
                       `target/encoder/prompt/prompt/prompt` [P, d] (+ optimizer state).
  numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt
                       the prompt alone, written by `np.save` (float32, the T5X
                       Checkpointer's save_dtype) to that name: a .npy file *without* the
                       .npy extension, at every save, exempt from T5X's checkpoint retention.
<step> is the absolute T5X step. ptjax writes the same numpy layout in its own MODEL_DIR at
every checkpoint save (`save_numpy_checkpoint`), and reads all of these as PROMPT_FILE.
"""

import dataclasses
import re
from typing import Optional

import numpy as np
import safetensors.numpy

from ptjax import files  # Whole-file writes; imports nothing of ptjax.


class PromptFileError(ValueError):
  """A prompt file that cannot be used, with the reason."""


class NoPromptError(PromptFileError):
  """A readable checkpoint that holds no prompt (a frozen model, a model-tuning run)."""

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# The official numpy checkpoint layout: MODEL_DIR/NUMPY_CHECKPOINTS/checkpoint_<step>/NUMPY_PROMPT
# (the prompt's path in the params tree, `encoder/prompt/prompt/prompt`, with dots).
NUMPY_CHECKPOINTS = "numpy_checkpoints"
NUMPY_PROMPT = "encoder.prompt.prompt.prompt"
_STEP_FOLDER = re.compile(r"checkpoint_(\d+)")
_NPY_MAGIC = b"\x93NUMPY"
# What PROMPT_FILE accepts, for errors.
ACCEPTED = ("a .npy file, a PEFT prompt-tuning adapter folder, a ptjax run (MODEL_DIR or one "
            "checkpoints/<step>), or a prompt-tuning run's MODEL_DIR, checkpoint_<step> or "
            f"{NUMPY_CHECKPOINTS}/checkpoint_<step>")


def save_npy(prompt, path: str) -> str:
  """[P, d] float32 .npy, written whole (temp file + rename: ptjax.files)."""
  files.save_npy(path, np.asarray(prompt, np.float32))
  return path


def numpy_checkpoint_path(model_dir: str, step: int) -> str:
  """MODEL_DIR/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt."""
  return files.join(model_dir, NUMPY_CHECKPOINTS, f"checkpoint_{int(step)}", NUMPY_PROMPT)


def save_numpy_checkpoint(prompt, model_dir: str, step: int) -> str:
  """The prompt at `step` in the official layout (`numpy_checkpoint_path`): np.save of the
  float32 array to the extension-less name, written whole. Returns the file's path."""
  path = numpy_checkpoint_path(model_dir, step)
  files.save_npy(path, np.asarray(prompt, np.float32))
  return path


def save_peft(prompt, folder: str, *, num_layers: Optional[int] = None,
              num_heads: Optional[int] = None, base_model: Optional[str] = None) -> str:
  """A PEFT prompt-tuning adapter folder; each file written whole. `base_model`: the frozen
  model it was trained on (adapter_config.json's `base_model_name_or_path`; None when
  unknown, as PEFT's default). num_layers / num_heads None: PEFT takes them from the base
  model's config."""
  prompt = np.ascontiguousarray(np.asarray(prompt, np.float32))
  files.write_bytes(files.join(folder, ADAPTER_WEIGHTS), peft_weights(prompt))
  files.write_json(files.join(folder, ADAPTER_CONFIG),
                   peft_config(prompt, num_layers=num_layers, num_heads=num_heads,
                               base_model=base_model), indent=2)
  return folder


def peft_weights(prompt) -> bytes:
  """The bytes of adapter_model.safetensors."""
  prompt = np.ascontiguousarray(np.asarray(prompt, np.float32))
  return safetensors.numpy.save({"prompt_embeddings": prompt})


def peft_config(prompt, *, num_layers: Optional[int] = None, num_heads: Optional[int] = None,
                base_model: Optional[str] = None) -> dict:
  """The contents of adapter_config.json."""
  shape = np.shape(prompt)
  return {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM",
          "num_virtual_tokens": shape[0], "token_dim": shape[1],
          "num_transformer_submodules": 1, "num_attention_heads": num_heads,
          "num_layers": num_layers, "prompt_tuning_init": "RANDOM",
          "base_model_name_or_path": base_model or None, "inference_mode": True}


@dataclasses.dataclass
class FoundPrompt:
  """A prompt and where it came from.

  kind: 'npy', 'peft', 'ptjax run', 't5x checkpoint' or 'numpy checkpoint'.
  source: the file or folder read. step: the training step it was saved at, when known.
  model_dir: the run folder it belongs to, when the layout says so (its run.json /
  config.gin name the frozen model). peft_config: a PEFT source's adapter_config.json."""
  prompt: np.ndarray
  kind: str
  source: str
  step: Optional[int] = None
  model_dir: Optional[str] = None
  peft_config: Optional[dict] = None


def _run_checkpoints_folder(path: str):
  """(checkpoints folder, None) for `MODEL_DIR` or `MODEL_DIR/checkpoints`; (None, step
  folder) for one `<step>` folder of a ptjax run; (None, None) otherwise."""
  for candidate in (files.join(path, "checkpoints"), path):
    if files.isdir(candidate) and any(n.isdigit() for n in files.listdir(candidate)):
      return candidate, None
  if files.isdir(files.join(path, "default")):
    return None, path
  return None, None


def _prompt_of(tree, where: str) -> np.ndarray:
  try:
    return np.asarray(tree["trainable"]["prompt"]["prompt"], np.float32)
  except (KeyError, TypeError):
    raise NoPromptError(f"{where} is a ptjax run checkpoint without a prompt "
                          f"(a model-tuning run?).") from None


def _step_of(name: str) -> Optional[int]:
  match = _STEP_FOLDER.fullmatch(name)
  return int(match.group(1)) if match else None


def _check_step(found: FoundPrompt, step: Optional[int]) -> FoundPrompt:
  if step is not None and found.step is not None and found.step != step:
    raise PromptFileError(f"{found.source} is step {found.step}, not the step {step} asked "
                          f"for; name that step's checkpoint, or the run folder.")
  return found


def _load_run_prompt(path: str, folder, step_folder, step: Optional[int]) -> FoundPrompt:
  """The prompt of a run's newest readable checkpoint (an unreadable newer one is skipped
  with one line), of `step`, or of one step folder."""
  from ptjax.checkpoints.train_state import restore_newest, restore_step_folder
  if step_folder is not None:
    model_dir = files.dirname(files.dirname(step_folder))
    name = files.basename(step_folder.rstrip("/"))
    found = FoundPrompt(_prompt_of(restore_step_folder(step_folder), step_folder),
                        "ptjax run", step_folder, int(name) if name.isdigit() else None,
                        model_dir)
    return _check_step(found, step)
  model_dir = path if folder == files.join(path, "checkpoints") else files.dirname(folder)
  if step is not None:
    step_dir = files.join(folder, str(step))
    if not files.isdir(step_dir):
      raise PromptFileError(f"{folder} has no checkpoint of step {step} (it has "
                            f"{', '.join(n for n in files.listdir(folder) if n.isdigit())}).")
    return FoundPrompt(_prompt_of(restore_step_folder(step_dir), step_dir), "ptjax run",
                       step_dir, step, model_dir)
  saved, tree = restore_newest(folder, restore_step_folder, then="using")
  step_dir = files.join(folder, str(saved))
  return FoundPrompt(_prompt_of(tree, step_dir), "ptjax run", step_dir, saved, model_dir)


def _load_peft(path: str) -> FoundPrompt:
  import json
  weights = files.join(path, ADAPTER_WEIGHTS)
  config_path = files.join(path, ADAPTER_CONFIG)
  if not files.exists(weights):
    raise PromptFileError(f"{path}: no {ADAPTER_WEIGHTS}, and not a prompt-tuning run or "
                          f"checkpoint; PROMPT_FILE takes {ACCEPTED}.")
  if not files.exists(config_path):
    raise PromptFileError(
        f"{config_path} is missing: a PEFT adapter folder needs it beside {ADAPTER_WEIGHTS} "
        f"(peft_type PROMPT_TUNING, num_virtual_tokens); copy the whole folder written by "
        f"save_pretrained.")
  try:
    config = json.loads(files.read_text(config_path))
  except ValueError as e:
    raise PromptFileError(f"{config_path} is not valid JSON ({e}); copy it again.") from None
  if not isinstance(config, dict):
    raise PromptFileError(f"{config_path} is not a JSON object.")
  if config.get("peft_type") != "PROMPT_TUNING":
    raise PromptFileError(f"{path}: peft_type {config.get('peft_type')!r} is not "
                          f"PROMPT_TUNING.")
  try:
    tensors = safetensors.numpy.load(files.read_bytes(weights))
  except Exception as e:  # safetensors' SafetensorError is no ValueError.
    size = files.getsize(weights)
    raise PromptFileError(
        f"{weights} is truncated or not a safetensors file ({size:,} bytes; "
        f"{' '.join(str(e).split())}); copy it again.") from None
  if "prompt_embeddings" not in tensors:
    raise PromptFileError(f"{weights} has no 'prompt_embeddings' tensor (it holds "
                          f"{', '.join(sorted(tensors)) or 'nothing'}).")
  prompt = tensors["prompt_embeddings"]
  if config.get("num_transformer_submodules", 1) != 1:
    if "num_virtual_tokens" not in config:
      raise PromptFileError(f"{config_path} has no num_virtual_tokens.")
    # PEFT's seq2seq default also prompts the decoder; its first P rows are the encoder's.
    prompt = prompt[:config["num_virtual_tokens"]]
  return FoundPrompt(np.asarray(prompt, np.float32), "peft", path,
                     model_dir=_export_run_dir(path), peft_config=config)


def _export_run_dir(path: str) -> Optional[str]:
  """The ptjax MODEL_DIR of an exported prompt (MODEL_DIR/{prompt.npy, peft_adapter} or
  MODEL_DIR/best/...), when it is one (it has run.json)."""
  parent = files.dirname(path)
  for candidate in (parent, files.dirname(parent) if files.basename(parent) == "best" else None):
    if candidate and files.exists(files.join(candidate, "run.json")):
      return candidate
  return None


def _load_npy(path: str, what: str = "Prompt file") -> np.ndarray:
  try:
    prompt = files.load_npy(path)
  except (ValueError, EOFError, OSError) as e:
    raise PromptFileError(f"{what} {path} is not a .npy array ({e}).") from None
  if prompt.ndim != 2:
    raise PromptFileError(f"{what} {path} has shape {prompt.shape}; expected [P, embed].")
  return prompt.astype(np.float32)


def _numpy_file(path: str, step: Optional[int] = None) -> FoundPrompt:
  """A .npy file; in the official layout (numpy_checkpoints/checkpoint_<step>/...), with
  its step and run folder."""
  folder = files.dirname(path)
  found_step = _step_of(files.basename(folder))
  if found_step is not None and files.basename(files.dirname(folder)) == NUMPY_CHECKPOINTS:
    found = FoundPrompt(_load_npy(path, "Numpy checkpoint"), "numpy checkpoint", path,
                        found_step, files.dirname(files.dirname(folder)))
    return _check_step(found, step)
  return FoundPrompt(_load_npy(path), "npy", path, model_dir=_export_run_dir(path))


def _t5x_checkpoint(path: str, step: Optional[int] = None) -> FoundPrompt:
  """The prompt variable of a prompt-tuning run's T5X checkpoint (folder or single file)."""
  from ptjax.checkpoints.t5x import PROMPT_PARAM, read_t5x_prompt
  prompt = read_t5x_prompt(path)
  if prompt is None:
    raise NoPromptError(
        f"{path} is a T5X checkpoint without a prompt (no {PROMPT_PARAM}): a frozen model "
        f"goes in INITIAL_CHECKPOINT_PATH; PROMPT_FILE takes {ACCEPTED}.")
  if prompt.ndim != 2:
    raise PromptFileError(f"T5X checkpoint {path}: {PROMPT_PARAM} has shape {prompt.shape}; "
                          f"expected [P, embed].")
  name = files.basename(path.rstrip("/"))
  found = FoundPrompt(prompt, "t5x checkpoint", path, _step_of(name),
                      files.dirname(path) if _step_of(name) is not None else None)
  return _check_step(found, step)


def _numpy_checkpoint_folder(path: str, step: Optional[int] = None) -> FoundPrompt:
  """One numpy_checkpoints/checkpoint_<step> folder: its encoder.prompt.prompt.prompt."""
  target = files.join(path, NUMPY_PROMPT)
  if not files.exists(target):
    held = files.listdir(path)
    raise PromptFileError(
        f"{path} is a numpy checkpoint folder without {NUMPY_PROMPT} (it holds "
        f"{', '.join(held) or 'nothing'}): its prompt was not saved there (a save cut short? "
        f"use another step), or it is not a prompt-tuning run's.")
  return _numpy_file(target, step)


def _steps(folder: str, want) -> dict[int, str]:
  """{step: path} of the checkpoint_<step> entries of `folder` that `want(path)`."""
  if not files.isdir(folder):
    return {}
  out = {}
  for name in files.listdir(folder):
    found = _step_of(name)
    if found is not None and want(files.join(folder, name)):
      out[found] = files.join(folder, name)
  return out


def _official_run(path: str, step: Optional[int]) -> Optional[FoundPrompt]:
  """The newest prompt (or `step`'s) of a prompt-tuning MODEL_DIR, or of its
  numpy_checkpoints folder: numpy_checkpoints/checkpoint_<step> and T5X checkpoint_<step>
  folders, newest step first (numpy at a tie: it is the prompt alone). A newer one that
  cannot be read is skipped with one line. None when `path` is no such folder."""
  from ptjax.checkpoints.t5x import CHECKPOINT_FILE
  from ptjax.checkpoints.validate import CheckpointError
  if files.basename(path.rstrip("/")) == NUMPY_CHECKPOINTS:
    numpy_dir, t5x = path, {}
  else:
    numpy_dir = files.join(path, NUMPY_CHECKPOINTS)
    t5x = _steps(path, lambda p: files.exists(files.join(p, CHECKPOINT_FILE)))
  numpy = _steps(numpy_dir, files.isdir)
  if not numpy and not t5x:
    return None
  candidates = [(s, 1, p, _numpy_checkpoint_folder) for s, p in numpy.items()]
  candidates += [(s, 0, p, _t5x_checkpoint) for s, p in t5x.items()]
  candidates.sort(reverse=True)
  if step is not None:
    candidates = [c for c in candidates if c[0] == step]
    if not candidates:
      have = sorted(set(numpy) | set(t5x))
      raise PromptFileError(f"{path} has no checkpoint of step {step} (it has steps "
                            f"{', '.join(map(str, have))}).")
  failures = []
  for _, _, where, read in candidates:
    try:
      found = read(where)
    except NoPromptError:  # A model-tuning run's checkpoint: not damage.
      raise
    except (CheckpointError, PromptFileError) as e:
      failures.append((where, str(e)))
      continue
    for failed, reason in failures:
      _log_once(f"{failed} cannot be read ({reason}); using {where}")
    return found
  raise PromptFileError(f"no prompt in {path} can be read: "
                        + "; ".join(f"{w} ({r})" for w, r in failures))


def _log_once(line: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(line, flush=True)


def _head(path: str) -> bytes:
  with files.open_read(path, binary=True) as f:
    return f.read(len(_NPY_MAGIC))


def _looks_like_msgpack(head: bytes) -> bool:
  """A msgpack map's first byte (a T5X checkpoint file)."""
  return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def find_prompt(path: str, step: Optional[int] = None) -> FoundPrompt:
  """The [P, embed] float32 prompt of `path`, and where it came from (see FoundPrompt).

  `path`: a .npy file (with or without the extension); a PEFT prompt-tuning adapter folder;
  a ptjax run (MODEL_DIR, its checkpoints/ folder or one step folder); a prompt-tuning
  run's MODEL_DIR, T5X checkpoint_<step> (folder or single file), numpy_checkpoints/ or
  numpy_checkpoints/checkpoint_<step> (folder or the file in it). A run gives its newest
  readable step, or `step`. PromptFileError / CheckpointError: one line naming the file."""
  found = _find_prompt(path, step)
  if step is not None and found.step is None:
    raise PromptFileError(f"{found.source} holds one prompt, saved at no known step: drop "
                          f"the step ({step}), or name a run or checkpoint instead.")
  return found


def _find_prompt(path: str, step: Optional[int]) -> FoundPrompt:
  from ptjax.checkpoints.t5x import CHECKPOINT_FILE
  if not files.exists(path):
    raise PromptFileError(f"Prompt file {path} does not exist.")
  if files.isdir(path):
    if files.exists(files.join(path, ADAPTER_WEIGHTS)):
      return _load_peft(path)
    folder, step_folder = _run_checkpoints_folder(path)
    if folder is not None or step_folder is not None:
      return _load_run_prompt(path, folder, step_folder, step)
    if files.exists(files.join(path, CHECKPOINT_FILE)):
      return _t5x_checkpoint(path, step)
    if (_step_of(files.basename(path.rstrip("/"))) is not None
        and files.exists(files.join(path, NUMPY_PROMPT))) or \
        files.basename(files.dirname(path)) == NUMPY_CHECKPOINTS:
      return _numpy_checkpoint_folder(path, step)
    found = _official_run(path, step)
    if found is not None:
      return found
    return _load_peft(path)  # The error for a folder that is none of these.
  head = _head(path)
  if head == _NPY_MAGIC:
    return _numpy_file(path, step)
  if _looks_like_msgpack(head):
    return _t5x_checkpoint(path, step)
  if not head:
    raise PromptFileError(f"Prompt file {path} is empty (0 bytes): a truncated copy? Copy it "
                          f"again.")
  return _numpy_file(path, step)  # np.load's own reason, in one line.


def load_prompt(path: str) -> np.ndarray:
  """[P, embed] float32 from any prompt `find_prompt` reads (newest step of a run)."""
  return find_prompt(path).prompt
