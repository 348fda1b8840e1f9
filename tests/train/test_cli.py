"""End to end through `python -m ptjax.main` on the tiny T5X checkpoint and a TSV task:
files written, eval/infer, sharded and multi-host equivalence, kill and resume, errors."""

import json
import re
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import INLINE_CKPT, INLINE_CONFIG, ROOT, shared_fixture

WORDS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"]


def write_task(folder):
  rng = np.random.default_rng(0)
  paths = {}
  for split, n in (("train", 64), ("validation", 10)):
    path = os.path.join(folder, f"{split}.tsv")
    with open(path, "w") as f:
      f.write("inputs\ttargets\n")
      for w in rng.choice(WORDS, n):
        f.write(f"is {w} sweet?\t{'yes' if len(w) % 2 else 'no'}\n")
    paths[split] = path
  return paths


def cli(model_dir, *flags, run="prompt_tune", env=None, check=True, wait=True, task_dir=None):
  task = write_task(task_dir or os.path.dirname(model_dir))
  # The TSV task, unless the flags name a registered one (then nothing reads its settings).
  task_args = [] if any(f.startswith("--gin.MIXTURE_OR_TASK_NAME=") for f in flags) else [
      "--gin_file=gin/tasks/text_files.gin", f"--gin.TRAIN_FILE='{task['train']}'",
      f"--gin.VALIDATION_FILE='{task['validation']}'",
      f"--gin.VOCAB_PATH='{shared_fixture('t5_vocab/sentencepiece.model')}'"]
  args = [sys.executable, "-m", "ptjax.main", "--gin_file=gin/models/t5_1_1_tiny.gin",
          f"--gin_file=gin/runs/{run}.gin", *task_args, f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_fixture(INLINE_CKPT)}'",
          "--gin.BATCH_SIZE=8", *(["--gin.PROMPT_LENGTH=5"] if run != "model_tune" else []),
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}"]
  if run == "prompt_tune":
    # A small learning rate: at the paper's 0.3 this random tiny model is chaotic, and
    # float32 reduction-order noise between shardings (1e-7) grows past 1e-5 in 12 steps.
    args += ["--gin.TRAIN_STEPS=12", "--gin.SAVING_PERIOD=4", "--gin.EVAL_PERIOD=6",
             "--gin.trainer.Trainer.log_every=1", "--gin.LEARNING_RATE=0.01"]
  args += flags  # Last: the test's own settings win.
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
  proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f"CLI failed ({proc.returncode}):\n{err[-3000:]}")
  return proc.returncode, out, err


def train_losses(model_dir):
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "metrics.jsonl"))]
  return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("cli") / "run")
  _, out, _ = cli(model_dir)
  return model_dir, out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
  """The same run on 8 simulated CPU devices, mesh 4 (data) x 2 (model)."""
  model_dir = str(tmp_path_factory.mktemp("cli") / "sharded")
  cli(model_dir, "--num_cpu_devices=8", "--gin.MESH_SHAPE=(4, 2)")
  return model_dir


def test_train_writes_config_checkpoints_metrics_and_prompt(baseline):
  model_dir, out = baseline
  assert "steps 0 -> 12 (12 to go)" in out
  assert re.search(r"^step 12: loss \d+\.\d+, z_loss \S+, examples/s \S+", out, re.M)
  config = open(os.path.join(model_dir, "config.gin")).read()  # The operative config.
  assert "MODEL_DIR = '" in config and "PROMPT_LENGTH = 5" in config
  assert "trainer.train:" in config and "batch_size = %BATCH_SIZE" in config
  assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["12", "4", "8"]
  # A run checkpoint holds the prompt and its optimizer state, not the 2 MB frozen model.
  ckpt = os.path.join(model_dir, "checkpoints", "12")
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ckpt) for f in fs)
  assert size < 200_000, size
  steps = [s for s, _ in train_losses(model_dir)]
  assert steps == list(range(1, 13))
  metrics = json.load(open(os.path.join(model_dir, "eval", "ptjax_text_task",
                                        "step_12.metrics.json")))
  assert set(metrics) >= {"loss", "accuracy", "step"}
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "eval", "ptjax_text_task",
                                                   "step_12.jsonl"))]
  assert len(rows) == 10 and set(rows[0]) == {"input", "target", "prediction", "score"}
  assert rows[0]["input"].startswith("is ")
  assert np.load(os.path.join(model_dir, "prompt.npy")).shape == (5, 8)
  best = json.load(open(os.path.join(model_dir, "best", "best.json")))
  assert best["metric"] == "loss" and best["step"] in (6, 12)
  assert os.listdir(os.path.join(model_dir, "train"))  # TensorBoard event files.


def test_eval_and_infer_on_the_result(baseline, tmp_path):
  model_dir, _ = baseline
  _, out, _ = cli(model_dir, run="eval", task_dir=str(tmp_path))
  result = json.loads(out.strip().splitlines()[-1])
  trained = json.load(open(os.path.join(model_dir, "eval", "ptjax_text_task",
                                        "step_12.metrics.json")))
  assert result["loss"] == pytest.approx(trained["loss"], rel=1e-5)
  assert os.path.exists(os.path.join(model_dir, "eval", "ptjax_text_task", "step_0.jsonl"))
  # infer with the exported PEFT adapter instead of the run's checkpoint.
  cli(model_dir, f"--gin.PROMPT_FILE='{model_dir}/peft_adapter'", run="infer",
      task_dir=str(tmp_path))
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "infer", "ptjax_text_task",
                                                   "step_0.jsonl"))]
  evals = [json.loads(l) for l in open(os.path.join(model_dir, "eval", "ptjax_text_task",
                                                    "step_12.jsonl"))]
  assert [r["prediction"] for r in rows] == [r["prediction"] for r in evals]


def test_4x2_mesh_matches_one_device(baseline, sharded):
  model_dir, _ = baseline
  assert len(train_losses(sharded)) == 12
  for (s1, l1), (s2, l2) in zip(train_losses(model_dir), train_losses(sharded)):
    assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-5)
  np.testing.assert_allclose(np.load(f"{sharded}/prompt.npy"), np.load(f"{model_dir}/prompt.npy"),
                             atol=1e-5)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(sharded, tmp_path):
  multi = str(tmp_path / "multi")
  port = free_port()
  procs = [cli(multi, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
               f"--process_id={i}", "--num_cpu_devices=4", "--gin.MESH_SHAPE=(4, 2)",
               wait=False) for i in range(2)]
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  np.testing.assert_allclose(np.load(f"{multi}/prompt.npy"), np.load(f"{sharded}/prompt.npy"),
                             atol=1e-5)
  for (s1, l1), (s2, l2) in zip(train_losses(sharded), train_losses(multi)):
    assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-5)


def test_sigkill_and_resume_ends_with_the_same_prompt(baseline, tmp_path):
  model_dir, _ = baseline
  killed = str(tmp_path / "killed")
  proc = cli(killed, wait=False)
  marker = os.path.join(killed, "checkpoints", "4", "commit_success.txt")
  deadline = time.time() + 300
  while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(killed, "prompt.npy")), "finished before the kill"
  _, out, _ = cli(killed)
  assert "Resumed from" in out
  np.testing.assert_allclose(np.load(f"{killed}/prompt.npy"), np.load(f"{model_dir}/prompt.npy"),
                             atol=1e-6)


@pytest.mark.parametrize("flags,message", [
    (["--gin.INITIAL_CHECKPOINT_PATH='/no/such/checkpoint'"], "does not exist"),
    (["--gin.MIXTURE_OR_TASK_NAME='no_such_task'"], "Unknown task 'no_such_task'"),
    (["--gin.TRAINABLE=['prompt']"], "matches no variable"),
    (["--gin.train/utils.DatasetConfig.pack=True"], "Packing is not supported"),
    (["--gin_file=prompts/no_such.gin"], "prompts/no_such.gin"),
    (["--gin.PROMPT_LENGTH=0"], "PROMPT_LENGTH=0 in a prompt-tuning run trains no prompt: "
                                "give the prompt's length (>= 1), or use "
                                "gin/runs/model_tune.gin to tune the model."),
])
def test_one_line_errors(tmp_path, flags, message):
  code, out, err = cli(str(tmp_path / "run"), *flags, check=False)
  assert code == 2
  last = err.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last and "Traceback" not in err
  # gin's ERROR line per search path that lacks an include is noise, not a problem.
  assert "Path not found" not in err


def test_prompt_file_of_wrong_shape_is_one_line_error(tmp_path):
  np.save(tmp_path / "p.npy", np.zeros((7, 8), np.float32))
  code, _, err = cli(str(tmp_path / "run"), "--gin_file=gin/prompts/from_file.gin",
                     f"--gin.PROMPT_FILE='{tmp_path}/p.npy'", check=False)
  last = err.strip().splitlines()[-1]
  assert code == 2 and "has shape (7, 8) but the model needs" in last and "(5, 8)" in last


def test_model_tuning_run_is_the_same_trainer(tmp_path):
  model_dir = str(tmp_path / "model_tune")
  _, out, _ = cli(model_dir, "--gin.TRAIN_STEPS=2",
                  "--gin.SAVING_PERIOD=2", "--gin.EVAL_PERIOD=2", run="model_tune")
  assert "steps 0 -> 2 (2 to go)" in out and "\nstep 2: loss " in out
  assert not os.path.exists(os.path.join(model_dir, "prompt.npy"))  # No prompt at all.
  import orbax.checkpoint as ocp
  tree = ocp.StandardCheckpointer().restore(os.path.join(model_dir, "checkpoints", "2",
                                                         "default"))
  assert set(tree["trainable"]) == {"params"}
  assert tree["trainable"]["params"]["token_embedder"]["embedding"].shape == (32128, 8)
  # The trained model is also written in T5X format, equal to the run's final weights.
  from ptjax.checkpoints import load_checkpoint
  _, exported = load_checkpoint(os.path.join(model_dir, "checkpoint_2"), INLINE_CONFIG)
  _, initial = load_checkpoint(shared_fixture(INLINE_CKPT), INLINE_CONFIG)
  for name in ("token_embedder", "decoder"):
    jax_tree_equal = [np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(exported[name]), jax.tree.leaves(tree["trainable"]["params"][name]))]
    assert all(jax_tree_equal)
  assert not np.array_equal(exported["token_embedder"]["embedding"],
                            initial["token_embedder"]["embedding"])
  # Its checkpoints hold the layers unscanned: resuming scanned is refused, nothing rewritten.
  before = {n: open(os.path.join(model_dir, n)).read() for n in ("config.gin", "run.json")}
  assert json.loads(before["run.json"])["scan_layers"] is False
  code, _, err = cli(model_dir, "--gin.TRAIN_STEPS=4", "--gin.SAVING_PERIOD=2",
                     "--gin.EVAL_PERIOD=2", "--gin.SCAN_LAYERS=True", run="model_tune",
                     check=False)
  assert code == 2 and err.strip().splitlines()[-1] == (
      f"error: {model_dir}/checkpoints hold trained layers saved with SCAN_LAYERS "
      f"(T5Config.scan_layers)=False; this run has True: set it back to resume, or use a new "
      f"MODEL_DIR."), err[-2000:]
  assert {n: open(os.path.join(model_dir, n)).read() for n in before} == before
  assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["2"]


def test_a_prompt_run_resumes_in_either_layer_layout(baseline, tmp_path):
  """A prompt (and its optimizer state) is the same in both layouts: an unscanned prompt
  run resumes scanned, from its last checkpoint."""
  import shutil
  model_dir = str(tmp_path / "run")
  shutil.copytree(baseline[0], model_dir)
  assert "scan_layers" not in json.load(open(os.path.join(model_dir, "run.json")))
  _, out, _ = cli(model_dir, "--gin.TRAIN_STEPS=14", "--gin.SCAN_LAYERS=True")
  assert f"Resumed from {model_dir}/checkpoints/12." in out and "\nstep 14: loss " in out


def _non_finite_files(folder):
  """Paths under `folder` holding a non-finite number (JSON, JSONL, .npy, orbax arrays)."""
  import math

  import orbax.checkpoint as ocp
  bad = []
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      if name.endswith(".npy"):
        if not np.isfinite(np.load(path)).all():
          bad.append(path)
      elif name.endswith((".json", ".jsonl")):
        text = open(path).read()
        if re.search(r"\b(NaN|Infinity)\b", text):
          bad.append(path)
  for step in os.listdir(os.path.join(folder, "checkpoints")):
    if step.isdigit():
      tree = ocp.StandardCheckpointer().restore(os.path.join(folder, "checkpoints", step,
                                                             "default"))
      if not all(np.isfinite(np.asarray(x, np.float64)).all() for x in jax.tree.leaves(tree)
                 if np.issubdtype(np.asarray(x).dtype, np.floating)):
        bad.append(f"checkpoints/{step}")
  return bad


def test_a_diverging_run_stops_at_the_first_non_finite_step_and_saves_nothing_of_it(tmp_path):
  """Issue 15: LEARNING_RATE=1e39 (inf in float32) used to train on and save NaN prompts,
  checkpoints and best/ with exit 0."""
  model_dir = str(tmp_path / "run")
  cli(model_dir, "--gin.TRAIN_STEPS=2", "--gin.SAVING_PERIOD=2", "--gin.EVAL_PERIOD=2",
      "--gin.BEST_METRIC='loss'")
  before = {p: open(os.path.join(model_dir, p), "rb").read()
            for p in ("prompt.npy", "best/prompt.npy", "metrics.jsonl")}
  code, out, err = cli(model_dir, "--gin.TRAIN_STEPS=4", "--gin.SAVING_PERIOD=1",
                       "--gin.LEARNING_RATE=1e39", check=False)
  last = err.strip().splitlines()[-1]
  assert code == 2 and "Traceback" not in err
  assert re.search(r"not finite at step 3 \(nothing from that step on was saved; the last good "
                   r"checkpoint is .*/checkpoints/2 \(a rerun resumes from it\)\). Likely "
                   r"causes: a learning rate too high \(LEARNING_RATE=1e\+39\)", last), last
  assert _non_finite_files(model_dir) == []
  assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["2"]
  for path, content in before.items():  # The earlier results are untouched.
    assert open(os.path.join(model_dir, path), "rb").read() == content
  # The previous checkpoint resumes, with a sane learning rate.
  _, out, _ = cli(model_dir, "--gin.TRAIN_STEPS=4", "--gin.SAVING_PERIOD=2")
  assert "Resumed from" in out and "steps 2 -> 4 (2 to go)" in out
  assert _non_finite_files(model_dir) == []


def _snapshot(folder):
  return {os.path.relpath(os.path.join(root, n), folder): open(os.path.join(root, n), "rb").read()
          for root, _, names in os.walk(folder) for n in names}


def test_mistaken_commands_leave_a_finished_run_byte_identical(tmp_path):
  """Issue 15: a command that failed (or an eval in the training folder) used to rewrite the
  finished run's config.gin, best.json and metrics.jsonl; an empty best.json (a kill during
  its write) blocked every resume naming no file."""
  model_dir = str(tmp_path / "run")
  flags = ["--gin.TRAIN_STEPS=2", "--gin.SAVING_PERIOD=2", "--gin.EVAL_PERIOD=2"]
  cli(model_dir, *flags)
  before = _snapshot(model_dir)
  code, _, err = cli(model_dir, *flags, "--gin.MIXTURE_OR_TASK_NAME='no_such_task'",
                     check=False)
  assert code == 2 and "Unknown task 'no_such_task'" in err.strip().splitlines()[-1]
  code, _, err = cli(model_dir, "--gin.TRAIN_STEPS=1", check=False)
  assert code == 2 and "checkpoints/2 is past TRAIN_STEPS (1)" in err.strip().splitlines()[-1]
  _, out, _ = cli(model_dir, *flags)  # The finished command again: it reports its result.
  assert "nothing to go" in out
  np.save(tmp_path / "other.npy", np.zeros((5, 8), np.float32))
  cli(model_dir, f"--gin.PROMPT_FILE='{tmp_path}/other.npy'", run="eval")
  after = _snapshot(model_dir)
  changed = sorted(p for p in before if after.get(p) != before[p])
  assert changed == [], changed
  new = sorted(set(after) - set(before))
  assert all(p.startswith("eval/") for p in new), new  # The eval's own files only.
  assert json.load(open(os.path.join(model_dir, "eval", "ptjax_text_task",
                                     "step_0.metrics.json")))["step"] == 0
  # A torn best.json (what a kill mid-write left before writes were whole): named.
  open(os.path.join(model_dir, "best", "best.json"), "w").close()
  code, _, err = cli(model_dir, "--gin.TRAIN_STEPS=4", check=False)
  last = err.strip().splitlines()[-1]
  assert code == 2 and "best/best.json is not valid JSON" in last and "Traceback" not in err
