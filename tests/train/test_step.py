"""The jitted train step: only the prompt moves, the loss falls, state is prompt-sized."""

import jax
import numpy as np

from conftest import INLINE_CKPT, INLINE_CONFIG, RANDOM_CONFIG, shared_fixture
from ptjax import prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.checkpoints.validate import flat
from ptjax.model.inference import shift_right
from ptjax.train import optim, partitioning, runs
from ptjax.train.step import LossConfig, build_steps


def fixed_batch(vocab, batch=8, inputs=12, targets=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(2, vocab, (batch, inputs)).astype(np.int32)
  t = rng.integers(2, vocab, (batch, targets)).astype(np.int32)
  x[:, -1] = t[:, -1] = 1
  return {"encoder_input_tokens": x, "decoder_input_tokens": np.asarray(shift_right(t)),
          "decoder_target_tokens": t}


def make(config, checkpoint, prompt_length, trainable=optim.PROMPT_ONLY, dropout=False,
         optimizer=None, num_microbatches=None):
  mesh = partitioning.make_mesh()
  run = runs.setup_run(config, checkpoint, prompt_length, prompts.sampled_vocab(), trainable,
                          mesh)
  optimizer = optim.paper_adafactor() if optimizer is None else optimizer
  state, shardings = runs.init_state(run, optimizer)
  steps = build_steps(run.model, optimizer, mesh, shardings, run.frozen_shardings, LossConfig(),
                      dropout=dropout, num_microbatches=num_microbatches)
  return run, state, steps


def test_training_changes_only_the_prompt():
  path = shared_fixture(INLINE_CKPT)
  config = INLINE_CONFIG.replace(dropout_rate=0.1)
  run, state, steps = make(config, path, prompt_length=5, dropout=True)
  prompt0 = np.asarray(state.trainable["prompt"]["prompt"])
  batch = fixed_batch(1000)
  for _ in range(3):
    state, metrics = steps.train(state, run.frozen, batch)
  assert int(state.step) == 3
  _, original = load_checkpoint(path)
  frozen = flat(run.frozen["params"])
  assert sorted(frozen) == sorted(flat(original))
  for name, array in flat(original).items():
    assert np.array_equal(np.asarray(frozen[name]), array), name  # Bit-identical.
  assert np.abs(np.asarray(state.trainable["prompt"]["prompt"]) - prompt0).max() > 1e-3
  # The optimizer state holds prompt-shaped moments and counters, nothing of the weights.
  shapes = {np.shape(x) for x in jax.tree.leaves(state.opt_state)}
  assert shapes <= {(), (1,), (5, 8)} and (5, 8) in shapes
  assert sum(np.asarray(x).nbytes for x in jax.tree.leaves(state.opt_state)) < 2 * 5 * 8 * 4


def test_prompt_tuning_halves_the_loss_of_a_fixed_batch(random_t5x_checkpoint):
  run, state, steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=20)
  batch = fixed_batch(RANDOM_CONFIG.vocab_size)
  losses = []
  for _ in range(300):
    state, metrics = steps.train(state, run.frozen, batch)
    losses.append(float(metrics["loss"]) / float(metrics["tokens"]))
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_model_tuning_trains_every_weight(random_t5x_checkpoint):
  run, state, steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=0,
                           trainable=optim.EVERYTHING)
  assert run.frozen == {}
  before = jax.tree.map(np.asarray, state.trainable)
  state, _ = steps.train(state, run.frozen, fixed_batch(RANDOM_CONFIG.vocab_size))
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(b) - a).max()), before,
                       state.trainable)
  assert min(jax.tree.leaves(moved)) > 0


def test_step_is_one_jit_with_activation_constraints_and_donation(random_t5x_checkpoint):
  run, state, steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=4)
  lowered = steps.train.lower(state, run.frozen, fixed_batch(RANDOM_CONFIG.vocab_size))
  text = lowered.as_text()
  assert text.count("sharding_constraint") > 10  # The model's logical constraints are live.
  assert "tf.aliasing_output" in text or "jax.buffer_donor" in text  # State is donated.
