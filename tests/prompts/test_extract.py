"""Issue 17: a ptjax prompt-tuning run writes the official numpy prompt layout at every save,
and `python -m ptjax.prompts.extract` takes the prompt out of any run, checkpoint or adapter
into a .npy file or a PEFT adapter naming the frozen model.

One tiny CLI training (as tests/train/test_cli.py's `cli`) continues an official
prompt-tuning run: INITIAL_CHECKPOINT_PATH is the official checkpoint_1000 (frozen model +
prompt), PROMPT_FILE the official run folder; steps are absolute T5X steps (1001 .. 1012)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy

from conftest import INLINE_CKPT, ROOT, shared_fixture
from official_layout import NUMPY_PROMPT, official_run, odd_prompt
from ptjax import prompts
from ptjax.prompts import extract

sys.path.insert(0, os.path.join(ROOT, "tests", "train"))
from test_cli import write_task  # noqa: E402  (the same TSV task as test_cli)

SAVED = [1004, 1008, 1012]


def bits(a):
  return np.asarray(a, np.float32).view(np.uint32)


def env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
  folder = tmp_path_factory.mktemp("official")
  prompts_ = {500: odd_prompt((5, 8), 1), 1000: odd_prompt((5, 8), 2) * np.float32(0.5)}
  prompts_[1000].reshape(-1)[:4] = 0.0  # Trainable values (no float32 max) for the run.
  model_dir = official_run(str(folder / "pt_run"), shared_fixture(INLINE_CKPT), prompts_,
                           inline=True)
  return {"dir": model_dir, "ckpt": os.path.join(model_dir, "checkpoint_1000"),
          "prompts": prompts_, "frozen": shared_fixture(INLINE_CKPT)}


@pytest.fixture(scope="module")
def trained(official, tmp_path_factory):
  folder = tmp_path_factory.mktemp("ptjax")
  model_dir = str(folder / "run")
  task = write_task(str(folder))
  args = [sys.executable, "-m", "ptjax.main", "--gin_file=gin/models/t5_1_1_tiny.gin",
          "--gin_file=gin/runs/prompt_tune.gin", "--gin_file=gin/tasks/text_files.gin",
          f"--gin.TRAIN_FILE='{task['train']}'", f"--gin.VALIDATION_FILE='{task['validation']}'",
          f"--gin.VOCAB_PATH='{shared_fixture('t5_vocab/sentencepiece.model')}'",
          f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{official['ckpt']}'",
          f"--gin.PROMPT_FILE='{official['dir']}'",
          "--gin.BATCH_SIZE=8", "--gin.PROMPT_LENGTH=5",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
          "--gin.TRAIN_STEPS_RELATIVE=12", "--gin.SAVING_PERIOD=4", "--gin.EVAL_PERIOD=100000",
          "--gin.trainer.Trainer.log_every=12", "--gin.LEARNING_RATE=0.01"]
  proc = subprocess.run(args, cwd=ROOT, env=env(), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return model_dir, proc.stdout


def orbax_prompt(model_dir, step):
  tree = ocp.StandardCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step),
                                                         "default"))
  return np.asarray(tree["trainable"]["prompt"]["prompt"])


def test_a_run_writes_the_official_numpy_layout_at_every_save(trained, official):
  model_dir, out = trained
  assert "steps 1,000 -> 1,012 (12 to go)" in out
  # The official checkpoint as INITIAL_CHECKPOINT_PATH: one line, the prompt left out.
  assert out.count("left out of the frozen model") == 1
  assert sorted(os.listdir(os.path.join(model_dir, "checkpoints")), key=int) == list(map(str, SAVED))
  numpy_dir = os.path.join(model_dir, "numpy_checkpoints")
  assert sorted(os.listdir(numpy_dir)) == [f"checkpoint_{s}" for s in SAVED]
  for step in SAVED:
    folder = os.path.join(numpy_dir, f"checkpoint_{step}")
    assert os.listdir(folder) == [NUMPY_PROMPT]  # No .npy extension, nothing else.
    data = open(os.path.join(folder, NUMPY_PROMPT), "rb").read()
    saved = np.load(io.BytesIO(data))
    assert saved.dtype == np.float32 and saved.shape == (5, 8)
    np.testing.assert_array_equal(bits(saved), bits(orbax_prompt(model_dir, step)))
    buffer = io.BytesIO()  # What the official np_save writes for that array, byte for byte.
    np.save(buffer, saved)
    assert data == buffer.getvalue()
  # Training went on from the official prompt (PROMPT_FILE = the official run folder).
  first = np.load(os.path.join(numpy_dir, "checkpoint_1004", NUMPY_PROMPT))
  assert np.abs(first - official["prompts"][1000]).max() < 0.2
  np.testing.assert_array_equal(np.load(os.path.join(model_dir, "prompt.npy")),
                                np.load(os.path.join(numpy_dir, "checkpoint_1012", NUMPY_PROMPT)))
  # ptjax's own PEFT exports name the frozen model.
  for adapter in ("peft_adapter", "best/peft_adapter"):
    config = json.load(open(os.path.join(model_dir, adapter, "adapter_config.json")))
    assert config["base_model_name_or_path"] == os.path.realpath(official["ckpt"]), adapter
  # A ptjax run's numpy checkpoint is a PROMPT_FILE, like the official ones.
  found = prompts.find_prompt(os.path.join(numpy_dir, "checkpoint_1008"))
  assert (found.kind, found.step, found.model_dir) == ("numpy checkpoint", 1008, model_dir)


def run_extract(*args):
  proc = subprocess.run([sys.executable, "-m", "ptjax.prompts.extract", *args], cwd=ROOT,
                        env=env(), capture_output=True, text=True, timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


def test_extract_command_to_npy_twice_and_refusing_another_output(trained, tmp_path):
  model_dir, _ = trained
  out = str(tmp_path / "prompt.npy")
  code, stdout, stderr = run_extract("--input", model_dir, "--output", out)
  assert code == 0, stderr
  summary = json.loads(stdout.strip().splitlines()[-1])
  assert summary["kind"] == "ptjax run" and summary["step"] == 1012 and summary["written"]
  np.testing.assert_array_equal(bits(np.load(out)), bits(orbax_prompt(model_dir, 1012)))
  assert open(out, "rb").read() == open(os.path.join(model_dir, "prompt.npy"), "rb").read()
  before = os.stat(out).st_mtime_ns
  code, stdout, stderr = run_extract("--input", model_dir, "--output", out)  # Again: fine.
  assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["written"] is False, stderr
  assert os.stat(out).st_mtime_ns == before
  # Another prompt into the same output: refused in one line, unless --overwrite.
  code, stdout, stderr = run_extract("--input", model_dir, "--step", "1004", "--output", out)
  assert code == 2 and stdout == "" and "Traceback" not in stderr
  assert stderr.strip() == (f"error: --output {out} already exists and holds another prompt "
                            f"(not this same extraction, run before); choose a new path or "
                            f"pass --overwrite.")
  assert extract.main(["--input", model_dir, "--step", "1004", "--output", out,
                       "--overwrite"]) == 0
  np.testing.assert_array_equal(bits(np.load(out)), bits(orbax_prompt(model_dir, 1004)))


def read_adapter(folder):
  config = json.load(open(os.path.join(folder, "adapter_config.json")))
  weights = safetensors.numpy.load_file(os.path.join(folder, "adapter_model.safetensors"))
  return config, weights["prompt_embeddings"]


def test_extract_a_ptjax_run_to_a_peft_adapter_naming_the_base_model(trained, official,
                                                                      tmp_path, capsys):
  model_dir, _ = trained
  out = str(tmp_path / "adapter")
  code, stdout, stderr = run_extract("--input", os.path.join(model_dir, "checkpoints", "1008"),
                                     "--output", out)
  assert code == 0, stderr
  summary = json.loads(stdout.strip().splitlines()[-1])
  assert summary["format"] == "peft" and summary["step"] == 1008
  assert summary["base_model_from"] == os.path.join(model_dir, "run.json")
  config, weights = read_adapter(out)
  assert config["base_model_name_or_path"] == os.path.realpath(official["ckpt"])
  assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 5
  assert (config["num_layers"], config["num_attention_heads"]) == (2, 4)  # From config.gin.
  np.testing.assert_array_equal(bits(weights), bits(orbax_prompt(model_dir, 1008)))
  np.testing.assert_array_equal(bits(prompts.load_prompt(out)), bits(weights))
  # Twice: the same adapter, nothing rewritten.
  assert extract.main(["--input", os.path.join(model_dir, "checkpoints", "1008"),
                       "--output", out]) == 0
  assert json.loads(capsys.readouterr().out)["written"] is False
  # The adapter round-trips: back to .npy, and to another adapter that keeps its base model.
  assert extract.main(["--input", out, "--output", str(tmp_path / "back.npy")]) == 0
  np.testing.assert_array_equal(bits(np.load(tmp_path / "back.npy")), bits(weights))
  assert extract.main(["--input", out, "--output", str(tmp_path / "again")]) == 0
  assert read_adapter(tmp_path / "again")[0] == config
  # --base_model names another one; a folder holding other files is refused.
  assert extract.main(["--input", out, "--output", str(tmp_path / "hub"),
                       "--base_model", "google/t5-base-lm-adapt"]) == 0
  assert read_adapter(tmp_path / "hub")[0]["base_model_name_or_path"] == "google/t5-base-lm-adapt"
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "notes.txt").write_text("mine")
  capsys.readouterr()
  assert extract.main(["--input", out, "--output", str(tmp_path / "busy")]) == 2
  assert capsys.readouterr().err == (f"error: --output {tmp_path / 'busy'} already exists and "
                                     f"holds other files (notes.txt) (not this same extraction, "
                                     f"run before); choose a new path or pass --overwrite.\n")


def test_extract_every_official_artifact(official, tmp_path, capsys):
  d, frozen = official["dir"], official["frozen"]
  numpy_file = os.path.join(d, "numpy_checkpoints", "checkpoint_1000", NUMPY_PROMPT)
  for i, (path, kind) in enumerate([(d, "numpy checkpoint"), (official["ckpt"], "t5x checkpoint"),
                                    (numpy_file, "numpy checkpoint")]):
    out = str(tmp_path / f"adapter_{i}")
    assert extract.main(["--input", path, "--output", out]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kind"], summary["step"]) == (kind, 1000)
    assert summary["base_model_from"] == os.path.join(d, "config.gin")
    config, weights = read_adapter(out)
    assert config["base_model_name_or_path"] == frozen  # config.gin's INITIAL_CHECKPOINT_PATH.
    np.testing.assert_array_equal(bits(weights), bits(official["prompts"][1000]))
    assert extract.main(["--input", path, "--output", str(tmp_path / f"p{i}.npy")]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(bits(np.load(tmp_path / f"p{i}.npy")),
                                  bits(official["prompts"][1000]))
  capsys.readouterr()
  assert extract.main(["--input", d, "--step", "500", "--output", str(tmp_path / "old.npy")]) == 0
  np.testing.assert_array_equal(bits(np.load(tmp_path / "old.npy")),
                                bits(official["prompts"][500]))
  # The frozen model is no prompt: one line naming it and where it goes.
  capsys.readouterr()
  assert extract.main(["--input", frozen, "--output", str(tmp_path / "x.npy")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(
      f"error: {frozen} is a T5X checkpoint without a prompt (no encoder/prompt/prompt/prompt):"
      f" a frozen model goes in INITIAL_CHECKPOINT_PATH")
  assert not os.path.exists(tmp_path / "x.npy")


def test_extract_on_gs(gcs, tmp_path, capsys):
  """gs:// in and out, through ptjax.files and TensorStore's gcs driver (the emulator)."""
  local = official_run(str(tmp_path / "pt_run"), shared_fixture(INLINE_CKPT),
                       {7: odd_prompt((5, 8), 3)}, inline=False)  # The prompt in zarr.
  remote = "gs://ptjax-test/extract/pt_run"
  gcs.upload(local, remote)
  expected = bits(odd_prompt((5, 8), 3))
  for source in (remote, f"{remote}/checkpoint_7",
                 f"{remote}/numpy_checkpoints/checkpoint_7/{NUMPY_PROMPT}"):
    np.testing.assert_array_equal(bits(prompts.load_prompt(source)), expected)
  # The T5X checkpoint alone (numpy checkpoints gone): its zarr prompt, read from gs://.
  found = prompts.find_prompt(f"{remote}/checkpoint_7")
  assert (found.kind, found.step, found.model_dir) == ("t5x checkpoint", 7, remote)
  output = "gs://ptjax-test/extract/adapter"
  for written in (True, False):  # Twice: the second leaves it as it is.
    assert extract.main(["--input", f"{remote}/checkpoint_7", "--output", output]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] is written and summary["base_model"] == shared_fixture(INLINE_CKPT)
  assert gcs.listing(output) == {"adapter_model.safetensors", "adapter_config.json"}
  np.testing.assert_array_equal(bits(prompts.load_prompt(output)), expected)
  assert extract.main(["--input", output, "--output", str(tmp_path / "p.npy")]) == 0
  np.testing.assert_array_equal(bits(np.load(tmp_path / "p.npy")), expected)
