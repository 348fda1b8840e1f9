"""Errors a user can act on, and the check of a parameter tree against a `T5Config`."""

from typing import Collection, Optional

import ml_dtypes
import numpy as np
from flax import traverse_util

from ptjax.model import T5Config, param_shapes

# Parameter dtypes ptjax loads; anything else is refused by name.
FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")


class CheckpointError(ValueError):
  """A checkpoint that cannot be loaded, with what is wrong and how to fix it."""


def resolve_dtype(name, where: str = "dtype") -> np.dtype:
  """'float32', 'bfloat16', np.float16 ... -> np.dtype (bfloat16 via ml_dtypes)."""
  try:
    return np.dtype(getattr(ml_dtypes, name, name) if isinstance(name, str) else name)
  except TypeError:
    raise CheckpointError(f"{where}: unsupported array dtype {name!r}.") from None


def flat(params: dict) -> dict[str, object]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  return traverse_util.flatten_dict(params, sep="/")


def check_dtype(name: str, dtype, source: str) -> None:
  if np.dtype(dtype).name not in FLOAT_DTYPES:
    raise CheckpointError(
        f"{source}: parameter {name} has unsupported dtype {np.dtype(dtype).name}; "
        f"ptjax loads {', '.join(FLOAT_DTYPES)} weights.")


def check_names(names: Collection[str], config: T5Config, source: str) -> None:
  """Raises CheckpointError for a name that is no parameter of `config`."""
  unknown = sorted(set(names) - set(flat(param_shapes(config))))
  if unknown:
    raise CheckpointError(f"{source}: {', '.join(unknown)} is not a parameter of this model "
                          f"config (names look like 'token_embedder/embedding').")


def check_params(params: dict, config: T5Config, source: str,
                 names: Optional[Collection[str]] = None) -> None:
  """Raises CheckpointError naming the first missing, misshapen or unexpected parameter.

  `names` ('token_embedder/embedding', ...): `params` holds only these; check just them."""
  expected = {k: v.shape for k, v in flat(param_shapes(config)).items()}
  if names is not None:
    check_names(names, config, source)
    expected = {k: v for k, v in expected.items() if k in names}
  got = flat(params)
  for name, shape in expected.items():
    if name not in got:
      raise CheckpointError(
          f"{source}: parameter {name} is missing (the model config expects shape "
          f"{tuple(shape)}). Check that the checkpoint and the model config describe the "
          f"same architecture (layers, tied/untied logits, gated MLP).")
    if tuple(got[name].shape) != tuple(shape):
      raise CheckpointError(
          f"{source}: parameter {name} has shape {tuple(got[name].shape)} but the model "
          f"config expects {tuple(shape)}. Pick the config that matches the checkpoint "
          f"(a run's gin/models/t5_1_1_<size>.gin; convert's --config <size>).")
    check_dtype(name, got[name].dtype, source)
  unexpected = sorted(set(got) - set(expected))
  if unexpected:
    raise CheckpointError(
        f"{source}: unexpected parameter(s) {', '.join(unexpected[:5])}"
        f"{' ...' if len(unexpected) > 5 else ''} not in the model config; the checkpoint "
        f"has a different architecture.")
