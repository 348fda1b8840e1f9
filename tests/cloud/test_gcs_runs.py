"""Every path on gs://, end to end against the Cloud Storage emulator (conftest.py): a CLI
prompt-tuning run whose frozen T5X checkpoint (the real fixture with its zarr leaves),
vocabulary, task files and MODEL_DIR are all in the bucket; kill and resume; eval, serve,
convert and the experiment runner on gs://; two processes; the server stopped mid-run."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, TENSORSTORE_CKPT, shared_fixture

sys.path.insert(0, os.path.join(ROOT, "tests", "train"))
from test_cli import free_port, write_task  # noqa: E402  (the same TSV task as test_cli)

from ptjax import files  # noqa: E402

# The fixture's architecture (../shared/fixtures/README.md), on top of the tiny model file.
TINY_TENSORSTORE = ["--gin.config.T5Config.emb_dim=4", "--gin.config.T5Config.num_heads=2",
                    "--gin.config.T5Config.head_dim=2", "--gin.config.T5Config.mlp_dim=8",
                    "--gin.config.T5Config.relative_attention_num_buckets=4",
                    "--gin.config.T5Config.relative_attention_max_distance=8"]


@pytest.fixture(scope="module")
def staged(gcs, tmp_path_factory):
  """The inputs of a run, on local disk and uploaded to the bucket: {name: (local, gs)}."""
  local = tmp_path_factory.mktemp("inputs")
  task = write_task(str(local))
  out = {"checkpoint": (shared_fixture(TENSORSTORE_CKPT), "gs://ptjax-test/in/checkpoint_3"),
         "vocab": (shared_fixture("t5_vocab/sentencepiece.model"),
                   "gs://ptjax-test/in/vocab/sentencepiece.model"),
         "train": (task["train"], "gs://ptjax-test/in/task/train.tsv"),
         "validation": (task["validation"], "gs://ptjax-test/in/task/validation.tsv")}
  for source, target in out.values():
    gcs.upload(source, target)
  return out


def cli(staged, model_dir, *flags, where="gs", run="prompt_tune", wait=True, check=True,
        env=None, module="ptjax.main"):
  """`python -m ptjax.main` with every input from `where` ('gs' or 'local')."""
  pick = {k: v[1] if where == "gs" else v[0] for k, v in staged.items()}
  args = [sys.executable, "-m", module, "--gin_file=gin/models/t5_1_1_tiny.gin",
          f"--gin_file=gin/runs/{run}.gin", *TINY_TENSORSTORE,
          f"--gin.VOCAB_PATH='{pick['vocab']}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{pick['checkpoint']}'", "--gin.BATCH_SIZE=8"]
  if run != "serve":  # A server has no task, run folder or prompt of its own.
    args += ["--gin_file=gin/tasks/text_files.gin", f"--gin.TRAIN_FILE='{pick['train']}'",
             f"--gin.VALIDATION_FILE='{pick['validation']}'", f"--gin.MODEL_DIR='{model_dir}'",
             "--gin.PROMPT_LENGTH=5", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}"]
  if run == "prompt_tune":  # The checkpoint is at step 3: steps 3 -> 15.
    args += ["--gin.TRAIN_STEPS=15", "--gin.SAVING_PERIOD=4", "--gin.EVAL_PERIOD=6",
             "--gin.trainer.Trainer.log_every=1", "--gin.LEARNING_RATE=0.01"]
  args += flags
  proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})
  if not wait:
    return proc
  out, err = proc.communicate(timeout=900)
  if check and proc.returncode != 0:
    raise AssertionError(f"CLI failed ({proc.returncode}):\n{err[-3000:]}")
  return proc.returncode, out, err


def normalized(paths):
  """Run file names without what differs between two runs of the same thing (TensorBoard
  event files carry the time, host and pid; orbax names some files by process or hash)."""
  out = set()
  for p in paths:
    p = re.sub(r"events\.out\.tfevents\.[^/]*$", "events.out.tfevents.*", p)
    p = re.sub(r"/d/[0-9a-f]{32}$", "/d/*", p)
    out.add(p)
  return out


def local_listing(folder):
  return {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder)
          for f in fs}


@pytest.fixture(scope="module")
def gs_run(staged, tmp_path_factory):
  model_dir = "gs://ptjax-test/runs/gs_run"
  tic = time.perf_counter()
  _, out, err = cli(staged, model_dir)
  return model_dir, out, time.perf_counter() - tic


@pytest.fixture(scope="module")
def local_run(staged, tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("local") / "run")
  tic = time.perf_counter()
  _, out, _ = cli(staged, model_dir, where="local")
  return model_dir, out, time.perf_counter() - tic


def gs_prompt(model_dir):
  return files.load_npy(f"{model_dir}/prompt.npy")


def test_a_run_with_every_path_on_gs_writes_what_a_local_run_writes(gcs, gs_run, local_run):
  model_dir, out, gs_seconds = gs_run
  local_dir, _, local_seconds = local_run
  print(json.dumps({"gs_run_s": round(gs_seconds, 1), "local_run_s": round(local_seconds, 1)}))
  assert "steps 3 -> 15 (12 to go)" in out
  assert not os.path.exists(os.path.join(ROOT, "gs:")), "a local folder named gs: was written"
  remote = gcs.listing(model_dir)
  assert normalized(remote) == normalized(local_listing(local_dir))
  for name in ("config.gin", "run.json", "metrics.jsonl", "prompt.npy", "best/best.json",
               "best/prompt.npy", "best/peft_adapter/adapter_model.safetensors",
               "peft_adapter/adapter_config.json",
               "eval/ptjax_text_task/step_15.metrics.json"):
    assert name in remote, name
  assert any(p.startswith("train/events.out.tfevents.") for p in remote)
  # The same computation: the same prompt, to the bit, and the same logged metrics.
  np.testing.assert_array_equal(gs_prompt(model_dir), np.load(f"{local_dir}/prompt.npy"))
  gs_rows = files.read_jsonl(f"{model_dir}/metrics.jsonl")
  local_rows = files.read_jsonl(f"{local_dir}/metrics.jsonl")
  drop = lambda rows: [{k: v for k, v in r.items() if "per_sec" not in k and k != "examples/s"}
                       for r in rows]
  assert [r["step"] for r in gs_rows] == [r["step"] for r in local_rows]
  assert drop(gs_rows) == drop(local_rows)
  assert f"MODEL_DIR = '{model_dir}'" in files.read_text(f"{model_dir}/config.gin")


def test_tensorboard_events_on_gs_are_readable_by_tensorboard(gcs, gs_run, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  model_dir, _, _ = gs_run
  [name] = [p for p in gcs.listing(model_dir) if p.startswith("train/events")]
  local = tmp_path / "train"
  local.mkdir()
  (local / os.path.basename(name)).write_bytes(files.read_bytes(f"{model_dir}/{name}"))
  acc = event_accumulator.EventAccumulator(str(local))
  acc.Reload()
  losses = [(e.step, e.value) for e in acc.Scalars("loss")]
  logged = [(r["step"], r["loss"]) for r in files.read_jsonl(f"{model_dir}/metrics.jsonl")
            if r["kind"] == "train"]
  assert [s for s, _ in losses] == [s for s, _ in logged]
  np.testing.assert_allclose([v for _, v in losses], [v for _, v in logged], rtol=1e-6)


def _wait_for_checkpoint(gcs, model_dir, proc, deadline_s=300):
  deadline = time.time() + deadline_s
  while proc.poll() is None and time.time() < deadline:
    listing = gcs.listing(model_dir) if gcs.fs.exists(model_dir) else set()
    if any(re.match(r"checkpoints/\d+/commit_success\.txt$", p) for p in listing):
      return
    time.sleep(0.2)
  raise AssertionError("no checkpoint was committed")


def test_sigkill_on_gs_and_rerun_resumes_to_the_same_prompt(gcs, staged, gs_run):
  model_dir = "gs://ptjax-test/runs/killed"
  proc = cli(staged, model_dir, wait=False)
  _wait_for_checkpoint(gcs, model_dir, proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not files.exists(f"{model_dir}/prompt.npy"), "finished before the kill"
  _, out, _ = cli(staged, model_dir)
  assert f"Resumed from {model_dir}/checkpoints/" in out
  np.testing.assert_allclose(gs_prompt(model_dir), gs_prompt(gs_run[0]), atol=1e-6)


def test_eval_with_a_prompt_file_on_gs(staged, gs_run):
  model_dir, _, _ = gs_run
  eval_dir = "gs://ptjax-test/runs/eval_of_gs_run"
  _, out, _ = cli(staged, eval_dir, f"--gin.PROMPT_FILE='{model_dir}/peft_adapter'",
                  run="eval")
  result = json.loads(out.strip().splitlines()[-1])
  trained = files.read_json(f"{model_dir}/eval/ptjax_text_task/step_15.metrics.json")
  assert result["loss"] == pytest.approx(trained["loss"], rel=1e-5)
  rows = files.read_jsonl(f"{eval_dir}/eval/ptjax_text_task/step_0.jsonl")
  assert len(rows) == 10 and rows[0]["input"].startswith("is ")


def test_serve_with_prompts_requests_and_answers_on_gs(gcs, staged, gs_run):
  model_dir, _, _ = gs_run
  requests = "gs://ptjax-test/serve/requests.jsonl"
  answers = "gs://ptjax-test/serve/answers.jsonl"
  lines = [{"task": "a", "inputs": "is plum sweet?"}, {"task": "b", "inputs": "is plum sweet?"},
           {"task": "nope", "inputs": "x"}]
  files.write_text(requests, "".join(json.dumps(l) + "\n" for l in lines))
  prompts = {"a": f"{model_dir}/prompt.npy", "b": f"{model_dir}/peft_adapter"}
  cli(staged, None, run="serve", *[
      f"--gin.TASK_PROMPTS={prompts!r}", f"--gin.REQUESTS='{requests}'",
      f"--gin.OUTPUT='{answers}'", "--gin.MAX_DECODE_LENGTH=4"])
  out = files.read_jsonl(answers)
  assert [o.get("task") for o in out[:2]] == ["a", "b"]
  assert all("prediction" in o for o in out[:2]) and "error" in out[2]
  # The same prompt by two routes (npy, adapter) on the same input: the same answer.
  assert out[0]["prediction"] == out[1]["prediction"]
  assert out[0]["score"] == pytest.approx(out[1]["score"], abs=1e-6)
  assert "gs:" not in os.listdir(ROOT)


def test_convert_gs_to_gs_t5x_and_hf_bit_exact(staged, tmp_path):
  from conftest import TENSORSTORE_CONFIG
  import dataclasses
  from ptjax.checkpoints import load_checkpoint
  config = tmp_path / "config.json"
  config.write_text(json.dumps(dataclasses.asdict(TENSORSTORE_CONFIG)))
  source = staged["checkpoint"][1]
  _, reference = load_checkpoint(staged["checkpoint"][0], TENSORSTORE_CONFIG)
  import jax
  from ptjax.model import param_axes
  from ptjax.train import partitioning
  mesh = partitioning.make_mesh(1, devices=jax.devices()[:1])
  shardings = partitioning.logical_sharding(mesh, param_axes(TENSORSTORE_CONFIG))
  for fmt in ("t5x", "hf"):
    output = f"gs://ptjax-test/converted/{fmt}"
    for _ in range(2):  # Running the same command twice works.
      proc = subprocess.run([sys.executable, "-m", "ptjax.convert", f"--input={source}",
                             f"--output={output}", f"--format={fmt}", f"--config={config}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
      assert proc.returncode == 0, proc.stderr[-2000:]
    _, params = load_checkpoint(output, TENSORSTORE_CONFIG)
    # A run's load: straight into shardings, blocks read from gs:// (ranged reads).
    _, sharded = load_checkpoint(output, TENSORSTORE_CONFIG, shardings=shardings)
    from ptjax.checkpoints.validate import flat
    assert flat(params).keys() == flat(reference).keys() == flat(sharded).keys()
    for name, value in flat(reference).items():
      np.testing.assert_array_equal(flat(params)[name], value, err_msg=f"{fmt} {name}")
      np.testing.assert_array_equal(np.asarray(flat(sharded)[name]), value,
                                    err_msg=f"sharded {fmt} {name}")


def test_experiments_run_status_table_on_a_gs_root(gcs, monkeypatch):
  import contextlib
  import io

  from ptjax import assets
  from ptjax.checkpoints import load_checkpoint, save_t5x
  from ptjax.experiments import __main__ as experiments
  root, pretrain = "gs://ptjax-test/exp", "gs://ptjax-test/pretrain"
  _, params = load_checkpoint(assets.MINI_T5_CHECKPOINT)  # Stands in for the adapted model.
  save_t5x(params, f"{pretrain}/mini_large/lm_adaptation/checkpoint_2000", step=2000)
  monkeypatch.setenv("PTJAX_PRETRAIN_ROOT", pretrain)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  tiny = ["--family=mini", "--sizes=large", "--tasks=pt_mini_rte_taskless", "--seeds=0",
          "--cells=method=prompt_tuning", "--set=TRAIN_STEPS_RELATIVE=2", "--set=EVAL_PERIOD=2",
          "--set=SAVING_PERIOD=2", "--set=BATCH_SIZE=4", "--set=MAX_EVAL_EXAMPLES=8"]

  def run(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      assert experiments.main(list(argv)) == 0
    return out.getvalue()

  first = run("run", "fig1_scale", f"--root={root}", *tiny)
  assert "1 runs" in first or "runs: 1" in first or "ran 1" in first, first
  again = run("run", "fig1_scale", f"--root={root}", *tiny)
  assert "skipped" in again or "0 runs" in again, again
  [cell] = [p for p in gcs.listing(f"{root}/fig1_scale") if p.endswith("cell.json")]
  result = files.read_json(f"{root}/fig1_scale/{cell}")
  assert "accuracy" in result["metrics"]
  status = run("status", "fig1_scale", f"--root={root}", *tiny)
  assert "fig1_scale: 1 done, 0 started, 0 pending of 1" in status
  table = run("table", "fig1_scale", f"--root={root}", *tiny)
  assert {"fig1_scale.md", "fig1_scale.csv"} <= gcs.listing(f"{root}/tables")
  assert files.read_text(f"{root}/tables/fig1_scale.md").strip() in table.strip() or \
      table.strip().endswith(files.read_text(f"{root}/tables/fig1_scale.md").strip()[-200:])
  assert "gs:" not in os.listdir(ROOT)


def test_two_processes_on_gs_end_as_one_does(gcs, staged, gs_run):
  model_dir = "gs://ptjax-test/runs/multi"
  port = free_port()
  procs = [cli(staged, model_dir, f"--coordinator_address=127.0.0.1:{port}",
               "--num_processes=2", f"--process_id={i}", "--num_cpu_devices=4",
               "--gin.MESH_SHAPE=(4, 2)", wait=False) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
  np.testing.assert_allclose(gs_prompt(model_dir), gs_prompt(gs_run[0]), atol=1e-5)
  one = [(r["step"], r["loss"]) for r in files.read_jsonl(f"{gs_run[0]}/metrics.jsonl")
         if r["kind"] == "train"]
  two = [(r["step"], r["loss"]) for r in files.read_jsonl(f"{model_dir}/metrics.jsonl")
         if r["kind"] == "train"]
  assert [s for s, _ in one] == [s for s, _ in two]  # One writer: no doubled rows.
  np.testing.assert_allclose([l for _, l in two], [l for _, l in one], atol=1e-5)


def test_storage_stopped_mid_run_is_one_line_and_the_rerun_resumes(gcs, staged, gs_run):
  """Last in this file: it stops the session's emulator (restarted before it returns)."""
  model_dir = "gs://ptjax-test/runs/outage"
  proc = cli(staged, model_dir, wait=False)
  try:
    _wait_for_checkpoint(gcs, model_dir, proc)
    gcs.stop()
    out, err = proc.communicate(timeout=600)
  finally:
    if gcs.proc is None:
      gcs.start()
  assert proc.returncode == 2, err[-3000:]
  last = err.strip().splitlines()[-1]
  print(last)
  assert re.match(rf"error: {re.escape(model_dir)}/\S+: cannot \w+ \(", last), last
  assert "a rerun resumes" in last and "Traceback" not in err
  _, out, _ = cli(staged, model_dir)
  assert f"Resumed from {model_dir}/checkpoints/" in out
  np.testing.assert_allclose(gs_prompt(model_dir), gs_prompt(gs_run[0]), atol=1e-6)
