"""Frozen weights in bfloat16 (FROZEN_DTYPE, T5X's RestoreCheckpointConfig.dtype): the frozen
tree is stored on the devices in bfloat16 while the prompt and its optimizer state stay
float32; the compiled step's argument bytes drop by the frozen tree's half, and prompt
tuning the shipped mini T5 for 20 steps ends within 2% of float32's loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax import assets, prompts
from ptjax.data import mini_tasks, pipeline  # noqa: F401  (registers the mini tasks)
from ptjax.model import param_shapes, preset
from ptjax.train import optim, partitioning, trainer, utils
from ptjax.train.runs import init_state, setup_run
from ptjax.train.step import build_steps

CONFIG = preset("mini_large", dropout_rate=0.0)
TASK, LENGTHS, BATCH, STEPS = "pt_mini_rte", {"inputs": 96, "targets": 4}, 16, 20


def _nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _run(dtype: str):
  """Prompt-tunes the shipped mini T5 for STEPS steps with its frozen weights in `dtype`.
  -> (run, argument bytes of the compiled train step, losses per step)."""
  mesh = partitioning.make_mesh(1, devices=jax.devices()[:1])
  run = setup_run(CONFIG, assets.MINI_T5_CHECKPOINT, 20, prompts.random_uniform(),
                  optim.PROMPT_ONLY, mesh, seed=0, dtype=dtype)
  optimizer = optim.paper_adafactor(0.3)
  state, shardings = init_state(run, optimizer, seed=0)
  steps = build_steps(run.model, optimizer, mesh, shardings, run.frozen_shardings,
                      dropout=False)
  data = pipeline.batches(TASK, LENGTHS, "train", BATCH, seed=0)
  batch_sharding = partitioning.batch_sharding(mesh)
  losses = []
  for i in range(STEPS):
    batch = {k: jax.device_put(v, batch_sharding) for k, v in next(data).items()}
    if i == 0:
      compiled = steps.train.lower(state, run.frozen, batch).compile()
      arg_bytes = compiled.memory_analysis().argument_size_in_bytes
    state, metrics = steps.train(state, run.frozen, batch)
    losses.append(float(metrics["loss"]) / float(metrics["tokens"]))
  return run, state, arg_bytes, losses


@pytest.fixture(scope="module")
def runs():
  return {dtype: _run(dtype) for dtype in ("float32", "bfloat16")}


def test_frozen_tree_is_bfloat16_and_what_trains_float32(runs):
  run, state, _, _ = runs["bfloat16"]
  assert {x.dtype for x in jax.tree.leaves(run.frozen)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(state.trainable)} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree.leaves(state.opt_state)
          if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
  f32_run = runs["float32"][0]
  # The same weights, rounded once to bfloat16.
  for a, b in zip(jax.tree.leaves(f32_run.frozen), jax.tree.leaves(run.frozen)):
    np.testing.assert_array_equal(np.asarray(a).astype(jnp.bfloat16), np.asarray(b))


def test_argument_bytes_drop_by_half_the_frozen_tree(runs):
  f32_run, _, f32_bytes, _ = runs["float32"]
  _, _, bf16_bytes, _ = runs["bfloat16"]
  frozen = _nbytes(f32_run.frozen)
  assert frozen == 4 * sum(x.size for x in jax.tree.leaves(param_shapes(CONFIG)))
  assert f32_bytes - bf16_bytes == frozen // 2
  print(f"argument bytes: float32 {f32_bytes:,}, bfloat16 {bf16_bytes:,} "
        f"({f32_bytes / bf16_bytes:.2f}x)")
  assert f32_bytes / bf16_bytes > 1.9


def test_loss_after_20_steps_within_2_percent_of_float32(runs):
  f32 = runs["float32"][3]
  bf16 = runs["bfloat16"][3]
  print(f"per-token loss at step {STEPS}: float32 {f32[-1]:.4f}, bfloat16 {bf16[-1]:.4f}")
  assert f32[-1] < 0.8 * f32[0]  # It trains: the comparison is not between two flat lines.
  assert abs(bf16[-1] - f32[-1]) <= 0.02 * f32[-1]


def test_frozen_dtype_with_nothing_frozen_is_refused():
  tiny = preset("tiny")
  with pytest.raises(ValueError, match=r"^FROZEN_DTYPE='bfloat16' .* nothing is frozen .* "
                                       r"remove FROZEN_DTYPE\.$"):
    trainer._check_frozen_dtype(tiny, "bfloat16", None, optim.EVERYTHING)
  # Prompt tuning, or model tuning of some weights only, freezes the rest: accepted.
  trainer._check_frozen_dtype(tiny, "bfloat16", utils.PromptConfig(length=5),
                              optim.PROMPT_ONLY)
  trainer._check_frozen_dtype(tiny, "bfloat16", None, ("params/encoder/.*",))


def test_frozen_dtype_macro_is_the_restore_dtype(tmp_path):
  import gin
  from ptjax.train import gin_utils
  gin.clear_config()
  gin_utils.parse(["models/t5_1_1_tiny.gin", "runs/prompt_tune.gin"],
                  [f"MODEL_DIR='{tmp_path}'", "MIXTURE_OR_TASK_NAME='pt_mini_rte'",
                   "INITIAL_CHECKPOINT_PATH=None", "FROZEN_DTYPE='bfloat16'"])
  kwargs = gin.get_bindings("ptjax.train.trainer.train")
  assert kwargs["checkpoint_cfg"].restore.dtype == "bfloat16"
  gin.clear_config()
