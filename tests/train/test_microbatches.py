"""Gradient accumulation (`build_steps(num_microbatches=k)`): k microbatches summed in one
jitted step give the full batch's update, since the loss is a sum over tokens."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from conftest import RANDOM_CONFIG, ROOT
from ptjax.train import optim
from test_step import fixed_batch, make

# Plain SGD moves the prompt by lr * gradient, so a gradient off by any factor (divided by
# k, or one microbatch's instead of the sum) shows in the prompt. Adafactor is nearly
# invariant to the gradient's scale, so it alone would not catch a division by k.
SGD = optax.sgd(1.0)


def prompt(state):
  return np.asarray(state.trainable["prompt"]["prompt"])


def train(checkpoint, num_microbatches, optimizer, steps=1, batch_size=8, **kwargs):
  run, state, compiled = make(RANDOM_CONFIG, checkpoint, prompt_length=6, optimizer=optimizer,
                              num_microbatches=num_microbatches, **kwargs)
  batch = fixed_batch(RANDOM_CONFIG.vocab_size, batch=batch_size)
  start = jax.tree.map(np.asarray, state.trainable)
  for _ in range(steps):
    state, metrics = compiled.train(state, run.frozen, batch)
  return start, state, jax.tree.map(np.asarray, metrics)


def assert_same_metrics(metrics, reference):
  # nonfinite: the finite guard's flag (trainer.FiniteGuard), 0 for a finite step.
  assert sorted(metrics) == sorted(reference) == ["loss", "nonfinite", "tokens", "z_loss"]
  assert int(metrics["nonfinite"]) == int(reference["nonfinite"]) == 0
  for name in reference:
    assert metrics[name].dtype == reference[name].dtype, name
    np.testing.assert_allclose(metrics[name], reference[name], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("optimizer", [SGD, optim.paper_adafactor()], ids=["sgd", "adafactor"])
@pytest.mark.parametrize("k", [2, 4])
def test_microbatches_give_the_full_batch_update(random_t5x_checkpoint, k, optimizer):
  start, full, full_metrics = train(random_t5x_checkpoint, None, optimizer)
  _, micro, metrics = train(random_t5x_checkpoint, k, optimizer)
  moved = np.abs(prompt(full) - start["prompt"]["prompt"]).max()
  assert moved > 1e-2  # The step does something, so agreeing within 1e-5 means something.
  difference = np.abs(prompt(micro) - prompt(full)).max()
  print(f"k={k}: max |prompt(k) - prompt(full)| = {difference:.3g} (moved {moved:.3g})")
  assert difference <= 1e-5
  assert int(metrics["tokens"]) == 24  # Summed over all 8 rows, not one microbatch's 8/k.
  assert_same_metrics(metrics, full_metrics)
  assert int(micro.step) == int(full.step) == 1


def test_microbatches_agree_over_several_sgd_steps(random_t5x_checkpoint):
  _, full, full_metrics = train(random_t5x_checkpoint, None, SGD, steps=3)
  _, micro, metrics = train(random_t5x_checkpoint, 4, SGD, steps=3)
  assert np.abs(prompt(micro) - prompt(full)).max() <= 1e-5
  assert_same_metrics(metrics, full_metrics)


def test_microbatches_when_model_tuning(random_t5x_checkpoint):
  """Every weight trained (model-sharded gradient carry): the same update for all of them."""
  common = dict(num_microbatches=None, optimizer=SGD)
  run, state, full_steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=0,
                                trainable=optim.EVERYTHING, **common)
  batch = fixed_batch(RANDOM_CONFIG.vocab_size)
  full, full_metrics = full_steps.train(state, run.frozen, batch)
  run, state, micro_steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=0,
                                 trainable=optim.EVERYTHING, **{**common, "num_microbatches": 2})
  micro, metrics = micro_steps.train(state, run.frozen, batch)
  gaps = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                      micro.trainable, full.trainable)
  assert max(jax.tree.leaves(gaps)) <= 1e-5, gaps
  assert_same_metrics(jax.tree.map(np.asarray, metrics), jax.tree.map(np.asarray, full_metrics))


def test_one_microbatch_is_the_plain_step(random_t5x_checkpoint):
  texts = []
  for k in (None, 1):
    run, state, steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=4,
                             num_microbatches=k)
    texts.append(steps.train.lower(state, run.frozen,
                                   fixed_batch(RANDOM_CONFIG.vocab_size)).as_text())
  assert texts[0] == texts[1]
  assert "while" not in texts[0]  # No accumulation loop.


def test_microbatches_with_dropout_train(random_t5x_checkpoint):
  """With dropout each microbatch draws its own mask (the step's key folded with the
  microbatch index), so the update is not the full batch's, but it trains."""
  config = RANDOM_CONFIG.replace(dropout_rate=0.1)
  runs_ = {}
  for k in (None, 2):
    run, state, steps = make(config, random_t5x_checkpoint, prompt_length=6, dropout=True,
                             num_microbatches=k)
    start = prompt(state)
    state, metrics = steps.train(state, run.frozen, fixed_batch(RANDOM_CONFIG.vocab_size))
    assert int(metrics["tokens"]) == 24
    assert np.abs(prompt(state) - start).max() > 1e-3
    runs_[k] = prompt(state)
  assert np.abs(runs_[2] - runs_[None]).max() > 1e-6  # Different masks, different update.


@pytest.mark.parametrize("k,batch", [(4, 6), (3, 8)])
def test_batch_not_divisible_by_microbatches_is_a_one_line_error(random_t5x_checkpoint, k,
                                                                  batch):
  run, state, steps = make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=4,
                           num_microbatches=k)
  with pytest.raises(ValueError) as error:
    steps.train(state, run.frozen, fixed_batch(RANDOM_CONFIG.vocab_size, batch=batch))
  message = str(error.value)
  assert f"num_microbatches={k}" in message and f"batch size {batch}" in message
  assert "\n" not in message


@pytest.mark.parametrize("k", [0, -2, 2.0])
def test_bad_num_microbatches_fails_at_build_time(random_t5x_checkpoint, k):
  with pytest.raises(ValueError, match="num_microbatches"):
    make(RANDOM_CONFIG, random_t5x_checkpoint, prompt_length=4, num_microbatches=k)


TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, optax
    from conftest import RANDOM_CONFIG
    from test_step import fixed_batch, make
    assert jax.device_count() == 2, jax.devices()
    out = {}
    for k in (None, 2, 4):
      run, state, steps = make(RANDOM_CONFIG, sys.argv[1], prompt_length=6,
                               optimizer=optax.sgd(1.0), num_microbatches=k)
      assert dict(run.mesh.shape) == {"data": 2, "model": 1}
      batch = fixed_batch(RANDOM_CONFIG.vocab_size)
      hlo = steps.train.lower(state, run.frozen, batch).compile().as_text()
      state, metrics = steps.train(state, run.frozen, batch)
      out[str(k)] = {"prompt": np.asarray(state.trainable["prompt"]["prompt"]).tolist(),
                     "metrics": {n: float(v) for n, v in metrics.items()},
                     "all_to_all": hlo.count("all-to-all")}
    print("RESULT" + json.dumps(out))
""")


def test_microbatches_on_a_two_device_data_mesh(random_t5x_checkpoint):
  """2 CPU devices (a fresh process: the device count is fixed at JAX start-up). Same
  update as the full batch, and the strided split keeps every device's rows on that
  device: no all-to-all (a contiguous split of [B] into [k, B/k] would need one)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                       + " --xla_force_host_platform_device_count=2").strip(),
         "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests"),
                                        os.path.join(ROOT, "tests", "train"), ROOT,
                                        os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, random_t5x_checkpoint], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  out = json.loads(line[len("RESULT"):])
  full = np.asarray(out["None"]["prompt"])
  for k in ("2", "4"):
    assert np.abs(np.asarray(out[k]["prompt"]) - full).max() <= 1e-5, k
    for name, value in out["None"]["metrics"].items():
      assert out[k]["metrics"][name] == pytest.approx(value, rel=1e-5), (k, name)
    assert out[k]["all_to_all"] == 0, k
