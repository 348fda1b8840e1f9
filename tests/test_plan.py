"""The memory planner (ptjax/plan.py): its argument bytes are those of the real, compiled
train step; bfloat16 frozen weights halve the frozen part; the CLI prints the library's
numbers and refuses bad flags in one line (exit 2)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import pytest

from ptjax import plan, plan_table
from ptjax.model import T5Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(batch=8, inputs=16, targets=4, activation_dtype="float32")


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
          "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                        + f" --xla_force_host_platform_device_count={devices}").strip(),
          "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}


REAL_VS_PLAN = textwrap.dedent("""
    import dataclasses, json
    import jax, jax.numpy as jnp, numpy as np
    from ptjax import plan, plan_table
    from ptjax.model import init_params
    from ptjax.train import optim, partitioning, runs
    from ptjax.train.step import build_steps
    assert jax.device_count() == 4, jax.devices()
    out = []
    for model, mode, frozen in [("tiny", "prompt_tuning", "float32"),
                                ("tiny", "prompt_tuning", "bfloat16"),
                                ("mini_small", "model_tuning", "float32")]:
      config = plan.PlanConfig(model=model, mesh=(2, 2), mode=mode, frozen_dtype=frozen,
                               prompt_length=5 if mode == "prompt_tuning" else None,
                               eval_step=False, batch=8, inputs=16, targets=4,
                               activation_dtype="float32")
      planned = plan.plan(config)
      # The real thing: what the trainer builds, with real arrays.
      cfg = plan.model_config(config)
      mesh = partitioning.make_mesh(mesh_shape=(2, 2))
      params = jax.tree.map(lambda x: np.asarray(x).astype(frozen),
                            init_params(cfg, jax.random.PRNGKey(0)))
      trainable = optim.PROMPT_ONLY if mode == "prompt_tuning" else optim.EVERYTHING
      run = runs.build_run(cfg, params, config.prompt, None, trainable, mesh)
      optimizer = optim.paper_adafactor()
      state, shardings = runs.init_state(run, optimizer)
      steps = build_steps(run.model, optimizer, mesh, shardings, run.frozen_shardings,
                          dropout=True)
      sharding = partitioning.batch_sharding(mesh)
      batch = {k: jax.device_put(np.ones((8, n), np.int32), sharding) for k, n in
               [("encoder_input_tokens", 16), ("decoder_input_tokens", 4),
                ("decoder_target_tokens", 4), ("decoder_loss_weights", 4)]}
      real = steps.train.lower(state, run.frozen, batch).compile().memory_analysis()
      frozen_device_bytes = sum(
          int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
          for x, s in zip(jax.tree.leaves(run.frozen), jax.tree.leaves(run.frozen_shardings)))
      out.append({"model": model, "mode": mode, "frozen": frozen,
                  "planned": planned.train.argument_bytes,
                  "real": real.argument_size_in_bytes,
                  "real_output": real.output_size_in_bytes,
                  "planned_output": planned.train.output_bytes,
                  "frozen_device_bytes": frozen_device_bytes})
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def real_vs_plan():
  """tiny and mini_small on a 2x2 mesh of simulated devices (a fresh process: the device
  count is fixed when JAX starts)."""
  proc = subprocess.run([sys.executable, "-c", REAL_VS_PLAN], cwd=ROOT, env=_env(4),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


def test_planned_argument_bytes_equal_the_compiled_real_step(real_vs_plan):
  """ACCEPTANCE: the planner's abstract state / frozen / batch are exactly the trainer's."""
  assert len(real_vs_plan) == 3
  for row in real_vs_plan:
    assert row["planned"] == row["real"], row
    assert row["planned_output"] == row["real_output"], row


def test_frozen_bfloat16_halves_the_frozen_argument_bytes(real_vs_plan):
  f32, bf16 = [r for r in real_vs_plan if r["model"] == "tiny" and r["mode"] == "prompt_tuning"]
  assert (f32["frozen"], bf16["frozen"]) == ("float32", "bfloat16")
  assert f32["planned"] - bf16["planned"] == f32["frozen_device_bytes"] // 2
  assert bf16["frozen_device_bytes"] == f32["frozen_device_bytes"] // 2


def _cli(*args, devices=1):
  return subprocess.run([sys.executable, "-m", "ptjax.plan", *args], cwd=ROOT,
                        env=_env(devices), capture_output=True, text=True, timeout=600)


TINY_FLAGS = ["--model", "tiny", "--batch", "8", "--inputs", "16", "--targets", "4",
              "--prompt_length", "5", "--activation_dtype", "float32", "--no_eval"]


@pytest.fixture(scope="module")
def tiny_plan():
  config = plan.PlanConfig(model="tiny", prompt_length=5, eval_step=False, **SMALL)
  return plan.plan(config)


def test_cli_prints_the_librarys_numbers(tiny_plan):
  as_json = _cli(*TINY_FLAGS, "--json")
  assert as_json.returncode == 0, as_json.stderr[-2000:]
  printed = json.loads(as_json.stdout)
  expected = tiny_plan.to_json()
  for key in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "peak_bytes"):
    assert printed["train"][key] == expected["train"][key], key
  assert printed["train"]["flops_per_device"] == expected["train"]["flops_per_device"]
  assert printed["fits"] is True and printed["eval"] is None
  assert printed["config"]["prompt_length"] == 5 and printed["config"]["mesh"] == [1, 1]

  text = _cli(*TINY_FLAGS)
  assert text.returncode == 0, text.stderr[-2000:]
  rows = {label: value for label, value in re.findall(r"^  (\w[\w .()]*?)\s+([\d.]+)$",
                                                      text.stdout, re.M)}
  gib = lambda n: f"{n / 2 ** 30:.3f}"
  assert rows["arguments"] == gib(expected["train"]["argument_bytes"])
  assert rows["temporaries (approx.)"] == gib(expected["train"]["temp_bytes"])
  assert rows["peak"] == gib(expected["train"]["peak_bytes"])
  assert "v4: 32 GiB" in text.stdout and ": fits (" in text.stdout
  assert "Temporaries are estimated by XLA's CPU backend" in text.stdout


def test_fits_is_decided_against_the_memory_limit(tiny_plan):
  peak = tiny_plan.train.peak_bytes
  assert tiny_plan.fits and tiny_plan.usable_bytes == int(32 * 2 ** 30 * 0.9)
  # A memory just below / above the peak (+ headroom) flips the verdict.
  high = plan.plan(dataclasses.replace(tiny_plan.config, memory_gib=1.01 * peak / 2 ** 30,
                                       headroom=0.0), train=tiny_plan.train)
  assert high.fits
  below = plan.plan(dataclasses.replace(tiny_plan.config, memory_gib=0.99 * peak / 2 ** 30,
                                        headroom=0.0), train=tiny_plan.train)
  assert not below.fits
  result = _cli(*TINY_FLAGS, "--memory_gib", f"{0.5 * peak / 2 ** 30:.9f}")
  assert result.returncode == 1, result.stderr[-2000:]  # `plan ... && launch` stops here.
  assert re.search(r"^memory: \S+ GiB \(--memory_gib\) per device, .*: does not fit "
                   r"\([\d.]+ GiB short\)\.$", result.stdout, re.M), result.stdout


@pytest.mark.parametrize("flags, message", [
    (["--mesh", "3"], "argument --mesh: '3' is not DATAxMODEL, e.g. 4x4"),
    (["--mesh", "0x4"], "--mesh 0x4: give DATAxMODEL with positive sizes, e.g. 4x4."),
    (["--remat", "sometimes"], "argument --remat: invalid choice: 'sometimes'"),
    (["--batch", "6", "--mesh", "4x1"], "--batch 6 does not split over 4 data-parallel"),
    (["--mode", "model_tuning", "--prompt_length", "10"], "trains no prompt"),
    (["--mode", "model_tuning", "--frozen_dtype", "bfloat16"], "nothing is frozen"),
    (["--table", "--model", "xxl"], "--table searches --model itself"),
    (["--table", "--json"], "--table prints a markdown table, not JSON: drop --json."),
    (["--table", "--sizes", "huge"], "--sizes: 'huge' is not a preset; choose from tiny"),
    (["--model", "xxxl"], "--model 'xxxl' is not a preset; choose from tiny, small"),
    (["--accelerator", "tpu9"], "--accelerator 'tpu9' is not a preset; choose from v3, v4, "
                                "v5e, v5p, a100-40g, a100-80g, h100, h200."),
])
def test_bad_flags_are_one_line_and_exit_2(flags, message):
  result = _cli(*flags)
  assert result.returncode == 2, result
  assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert result.stderr.startswith("python -m ptjax.plan: error: ") and message in \
      result.stderr, result.stderr


def test_too_few_devices_in_a_started_process_is_an_error():
  have = len(jax.devices("cpu"))
  with pytest.raises(ValueError, match=rf"started with {have} CPU device\(s\) but the plan "
                                       rf"needs {have + 1}: run `python -m ptjax.plan` in a "
                                       rf"fresh process"):
    plan.ensure_devices(have + 1)


def test_table_search_goes_from_cheapest_to_costliest():
  config = plan.PlanConfig(model="tiny", batch=8)
  assert plan_table.degrees(config, 4) == [(4, 1), (2, 2), (1, 4)]
  assert plan_table.degrees(dataclasses.replace(config, batch=2), 4) == [(2, 2), (1, 4)]
  ladder = [(c.mesh, c.microbatches, c.remat, c.frozen_dtype)
            for c in plan_table.rungs(config, (4, 1))]
  # 4 / 8 microbatches would leave fewer rows than the 4 data devices: skipped.
  assert ladder == [((4, 1), None, "none", "float32"), ((4, 1), None, "none", "bfloat16"),
                    ((4, 1), None, "full", "float32"), ((4, 1), None, "full", "bfloat16"),
                    ((4, 1), 2, "full", "float32"), ((4, 1), 2, "full", "bfloat16")]
  model_tuning = plan_table.rungs(dataclasses.replace(config, mode="model_tuning",
                                                      prompt_length=None), (1, 4))
  assert [(c.microbatches, c.frozen_dtype) for c in model_tuning] == [
      (None, "float32"), (None, "float32"), (2, "float32"), (4, "float32"), (8, "float32")]


def test_table_search_returns_the_first_fitting_rung():
  """With a memory limit below the first rung's peak, the search returns the first rung (in
  ladder order) whose train peak is under it."""
  config = plan.PlanConfig(model="tiny", batch=8, inputs=32, targets=8, prompt_length=4,
                           activation_dtype="float32", dropout_rate=0.0)
  ladder = plan_table.rungs(config, (1, 1))
  peaks = [plan.plan(c).train.peak_bytes for c in ladder]
  assert peaks[-1] < peaks[0]  # Microbatches shrink the [batch, length, vocab] logits.
  # The eval step (never microbatched) must fit too, and so must the last rung (the
  # search's test of a whole degree); rungs before it may as well.
  evals = [plan.plan(dataclasses.replace(c, eval_step=True)).eval.peak_bytes
           for c in ladder[:2]]
  limit = max(peaks[-1], *evals)
  assert limit < peaks[0], (peaks, evals)
  expected = next(c for c, p in zip(ladder, peaks) if p <= limit)
  memory_gib = (limit + 16) / (1 - config.headroom) / 2**30  # + rounding of int(bytes)
  result, why = plan_table.cheapest(dataclasses.replace(config, memory_gib=memory_gib), 1)
  assert why == "" and result.fits
  got = dataclasses.replace(result.config, eval_step=False, memory_gib=None)
  assert got == expected, (got, expected, peaks)


def test_scan_layers_is_passed_only_when_given():
  if "scan_layers" not in {f.name for f in dataclasses.fields(T5Config)}:
    pytest.skip("T5Config.scan_layers does not exist yet (another helper is adding it): "
                "enable this test when it does.")
  assert plan.model_config(plan.PlanConfig(model="tiny", scan_layers=True)).scan_layers
  assert not plan.model_config(plan.PlanConfig(model="tiny", scan_layers=False)).scan_layers
  default = plan.model_config(plan.PlanConfig(model="tiny")).scan_layers
  assert default == T5Config().scan_layers
