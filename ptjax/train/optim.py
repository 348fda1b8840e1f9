"""What trains, and how: TRAINABLE regexes -> (trainable, frozen) split; the paper's Adafactor.

Variable paths are `collection/...`, e.g. `prompt/prompt` or
`params/encoder/layers_0/mlp/wi_0/kernel`. Only trainable leaves are handed to
`jax.grad` and to the optimizer, so frozen weights get neither gradients nor state.
"""

import re
from typing import Any, Sequence

import jax
import optax
from flax import traverse_util

PROMPT_ONLY = ("prompt/.*",)
EVERYTHING = (".*",)


def _flat(variables: dict) -> dict[str, Any]:
  return traverse_util.flatten_dict(variables, sep="/")


def split_trainable(variables: dict, patterns: Sequence[str]) -> tuple[dict, dict]:
  """-> (trainable, frozen) nested dicts; a leaf is trainable if any regex fully matches
  its path. Raises if nothing matches."""
  compiled = [re.compile(p) for p in patterns]
  trainable, frozen = {}, {}
  for path, leaf in _flat(variables).items():
    (trainable if any(c.fullmatch(path) for c in compiled) else frozen)[path] = leaf
  if not trainable:
    examples = ", ".join(sorted(_flat(variables))[:3])
    raise ValueError(f"TRAINABLE={list(patterns)} matches no variable; paths look like "
                     f"{examples} (regexes must match a whole path).")
  return (traverse_util.unflatten_dict(trainable, sep="/"),
          traverse_util.unflatten_dict(frozen, sep="/"))


def merge(trainable: dict, frozen: dict) -> dict:
  """Inverse of `split_trainable`."""
  return traverse_util.unflatten_dict({**_flat(frozen), **_flat(trainable)}, sep="/")


def paper_adafactor(learning_rate: float = 0.3, decay_rate: float = 0.8,
                    clipping_threshold: float = 1.0, weight_decay_rate: float = 1e-5,
                    multiply_by_parameter_scale: bool = False,
                    factor_params: bool = True) -> optax.GradientTransformation:
  """The paper's optimiser: Adafactor, constant lr 0.3, decay 0.8, update clipping 1.0,
  weight decay 1e-5, no parameter scaling. The prompt [P, embed] is not factored; model
  weights (model tuning) are, as in T5X (`factor_params`).

  Composed with `optax.multi_transform` over labels 'prompt' / 'params' (the collection).
  """
  def adafactor(factored):
    return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                           clipping_threshold=clipping_threshold,
                           weight_decay_rate=weight_decay_rate or None,
                           multiply_by_parameter_scale=multiply_by_parameter_scale,
                           factored=factored)

  def labels(tree):
    return {collection: jax.tree.map(lambda _: collection, subtree)
            for collection, subtree in tree.items()}

  return optax.multi_transform(
      {"prompt": adafactor(False), "params": adafactor(factor_params)}, labels)


def _dict_keys(path) -> tuple:
  return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def opt_state_shardings(opt_state_shapes: Any, trainable_shapes: Any,
                        trainable_shardings: Any, replicated: Any) -> Any:
  """Sharding of every optimizer-state leaf: a leaf that sits under its parameter's path
  with the parameter's shape (a moment, say) shares the parameter's sharding; factored
  moments, counters and everything else are replicated."""
  params = {_dict_keys(path): (leaf.shape, sharding) for (path, leaf), sharding in zip(
      jax.tree_util.tree_flatten_with_path(trainable_shapes)[0],
      jax.tree.leaves(trainable_shardings))}

  def pick(path, leaf):
    keys = _dict_keys(path)
    for n in range(len(keys)):
      shape, sharding = params.get(keys[n:], (None, None))
      if sharding is not None:
        return sharding if getattr(leaf, "shape", None) == shape else replicated
    return replicated

  return jax.tree_util.tree_map_with_path(pick, opt_state_shapes)
