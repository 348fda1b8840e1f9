"""Bad input, the way users give it: each case is refused in one line that names the file or
setting and the fix, with exit code 2 and no traceback, before any work is wasted (issue 15,
acceptance 4). Train, eval and infer go through `ptjax.main` in this process; experiments
and convert through their own mains. Serve's bad requests: tests/test_serve_errors.py;
broken checkpoint files: tests/checkpoints/."""

import os
import shutil
import sys

import gin
import numpy as np
import pytest
from absl import flags

from ptjax import main as cli
from ptjax.checkpoints import load_checkpoint, save_t5x

from conftest import INLINE_CKPT, INLINE_CONFIG, shared_fixture

WORDS = ["apple", "banana", "cherry", "grape"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad_inputs")
  for split, n in (("train", 16), ("validation", 4)):
    with open(root / f"{split}.tsv", "w") as f:
      f.write("inputs\ttargets\n")
      for i in range(n):
        f.write(f"is {WORDS[i % 4]} sweet?\t{'yes' if i % 2 else 'no'}\n")
  (root / "three_columns.tsv").write_text("a\tb\tc\n")
  (root / "data.csv").write_text("inputs,targets\na,b\n")
  (root / "binary.tsv").write_bytes(b"\xff\xfe\x00bad\tx\n")
  (root / "a_folder").mkdir()
  (root / "a_file").write_text("x")
  (root / "models").mkdir()
  _, params = load_checkpoint(shared_fixture(INLINE_CKPT), INLINE_CONFIG)
  save_t5x(params, str(root / "models" / "checkpoint_7"), step=7)
  return root


def base(world, run="prompt_tune"):
  args = ["--gin_file=gin/models/t5_1_1_tiny.gin", f"--gin_file=gin/runs/{run}.gin",
          "--gin_file=gin/tasks/text_files.gin", f"--gin.MODEL_DIR='{world}/run_{run}'",
          f"--gin.TRAIN_FILE='{world}/train.tsv'",
          f"--gin.VALIDATION_FILE='{world}/validation.tsv'",
          f"--gin.VOCAB_PATH='{shared_fixture('t5_vocab/sentencepiece.model')}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_fixture(INLINE_CKPT)}'",
          "--gin.BATCH_SIZE=4", "--gin.PROMPT_LENGTH=3",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}"]
  if run in ("prompt_tune", "model_tune"):
    args.append("--gin.TRAIN_STEPS=2")
  if run == "model_tune":
    args.remove("--gin.PROMPT_LENGTH=3")
  return args


def run_main(argv, capsys):
  """`python -m ptjax.main ARGV` in this process: (exit code, last stderr line, stderr)."""
  gin.clear_config()
  flags.FLAGS.unparse_flags()
  flags.FLAGS(cli.rewrite_gin_args(["ptjax.main", *argv]))
  cwd = os.getcwd()
  os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    cli.main([])
    code = 0
  except SystemExit as e:
    code = e.code
  finally:
    os.chdir(cwd)
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  return code, (lines[-1] if lines else ""), err


def without(args, prefix):
  return [a for a in args if not a.startswith(prefix)]


def replace(args, prefix, new):
  return without(args, prefix) + [new]


# (id, run, change of the base arguments, text the one line must contain)
CASES = [
    # Steps, sizes and periods.
    ("train_steps_zero", "prompt_tune", lambda a, w: replace(a, "--gin.TRAIN_STEPS", "--gin.TRAIN_STEPS=0"),
     "TRAIN_STEPS=0 is not after the initial checkpoint's step 0"),
    ("train_steps_below_checkpoint", "prompt_tune", lambda a, w: replace(
        replace(a, "--gin.INITIAL_CHECKPOINT_PATH", f"--gin.INITIAL_CHECKPOINT_PATH='{w}/models/checkpoint_7'"),
        "--gin.TRAIN_STEPS", "--gin.TRAIN_STEPS=5"),
     "TRAIN_STEPS=5 is not after the initial checkpoint's step 7: TRAIN_STEPS is absolute"),
    ("both_step_counts", "prompt_tune", lambda a, w: a + ["--gin.TRAIN_STEPS_RELATIVE=2"],
     "Set exactly one of TRAIN_STEPS"),
    ("no_step_count", "prompt_tune", lambda a, w: without(a, "--gin.TRAIN_STEPS"),
     "Set exactly one of TRAIN_STEPS"),
    ("relative_steps_negative", "prompt_tune", lambda a, w: without(a, "--gin.TRAIN_STEPS") + [
        "--gin.TRAIN_STEPS_RELATIVE=-3"], "TRAIN_STEPS_RELATIVE=-3 must be a positive integer"),
    ("batch_size_zero", "prompt_tune", lambda a, w: replace(a, "--gin.BATCH_SIZE", "--gin.BATCH_SIZE=0"),
     "BATCH_SIZE=0 must be a positive integer"),
    ("saving_period_zero", "prompt_tune", lambda a, w: a + ["--gin.SAVING_PERIOD=0"],
     "SAVING_PERIOD=0 must be a positive integer"),
    ("eval_period_zero", "prompt_tune", lambda a, w: a + ["--gin.EVAL_PERIOD=0"],
     "EVAL_PERIOD=0 must be a positive integer"),
    ("lengths_without_targets", "prompt_tune", lambda a, w: replace(
        a, "--gin.TASK_FEATURE_LENGTHS", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16}"),
     "TASK_FEATURE_LENGTHS={'inputs': 16}: expected"),
    ("targets_length_zero", "prompt_tune", lambda a, w: replace(
        a, "--gin.TASK_FEATURE_LENGTHS", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 0}"),
     "'targets': 0}: expected"),
    ("prompt_length_negative", "prompt_tune", lambda a, w: replace(a, "--gin.PROMPT_LENGTH", "--gin.PROMPT_LENGTH=-1"),
     "PROMPT_LENGTH=-1 must be an integer >= 0"),
    ("microbatches_not_dividing", "prompt_tune", lambda a, w: a + ["--gin.trainer.Trainer.num_microbatches=3"],
     "num_microbatches=3 does not divide BATCH_SIZE=4"),
    ("microbatches_zero", "prompt_tune", lambda a, w: a + ["--gin.trainer.Trainer.num_microbatches=0"],
     "num_microbatches=0 must be a positive integer"),
    ("activation_dtype_float16", "prompt_tune", lambda a, w: a + ["--gin.ACTIVATION_DTYPE='float16'"],
     "float16 overflows T5 1.1's feed-forward activations; use 'bfloat16'"),
    ("activation_dtype_typo", "prompt_tune", lambda a, w: a + ["--gin.ACTIVATION_DTYPE='bf16'"],
     "T5Config.dtype='bf16' is not a dtype"),
    ("dropout_rate_too_big", "prompt_tune", lambda a, w: a + ["--gin.DROPOUT_RATE=1.5"],
     "DROPOUT_RATE=1.5 must be in [0, 1)"),
    # Optimisation and loss.
    ("learning_rate_zero", "prompt_tune", lambda a, w: a + ["--gin.LEARNING_RATE=0"],
     "LEARNING_RATE=0 must be > 0"),
    ("label_smoothing_too_big", "prompt_tune", lambda a, w: a + ["--gin.LABEL_SMOOTHING=1.5"],
     "LABEL_SMOOTHING=1.5 must be in [0, 1)"),
    ("z_loss_negative", "prompt_tune", lambda a, w: a + ["--gin.Z_LOSS=-1.0"],
     "Z_LOSS=-1.0 must be >= 0"),
    ("loss_normalizing_factor", "prompt_tune", lambda a, w: a + ["--gin.LOSS_NORMALIZING_FACTOR=233.0"],
     "LOSS_NORMALIZING_FACTOR=233.0: ptjax sums the loss"),
    ("best_metric_typo", "prompt_tune", lambda a, w: a + ["--gin.BEST_METRIC='acuracy'"],
     "BEST_METRIC='acuracy' is not a metric of ptjax_text_task; it has ['accuracy', 'loss']"),
    ("trainable_matches_nothing", "prompt_tune", lambda a, w: a + ["--gin.TRAINABLE=['prompt']"],
     "matches no variable"),
    ("packing", "prompt_tune", lambda a, w: a + ["--gin.train/utils.DatasetConfig.pack=True"],
     "Packing is not supported"),
    ("restore_mode_latest", "prompt_tune", lambda a, w: a + ["--gin.utils.RestoreCheckpointConfig.mode='latest'"],
     "restores one named checkpoint ('specific')"),
    ("save_dtype", "prompt_tune", lambda a, w: a + ["--gin.utils.SaveCheckpointConfig.dtype='bfloat16'"],
     "ptjax saves what trains in float32 only"),
    # Task files.
    ("train_file_missing", "prompt_tune", lambda a, w: replace(a, "--gin.TRAIN_FILE", f"--gin.TRAIN_FILE='{w}/nope.tsv'"),
     "nope.tsv does not exist"),
    ("train_file_a_directory", "prompt_tune", lambda a, w: replace(a, "--gin.TRAIN_FILE", f"--gin.TRAIN_FILE='{w}/a_folder'"),
     "a_folder is a directory, not a .tsv or .jsonl file"),
    ("train_file_three_columns", "prompt_tune", lambda a, w: replace(a, "--gin.TRAIN_FILE", f"--gin.TRAIN_FILE='{w}/three_columns.tsv'"),
     "three_columns.tsv:1: expected 2 tab-separated columns"),
    ("train_file_csv", "prompt_tune", lambda a, w: replace(a, "--gin.TRAIN_FILE", f"--gin.TRAIN_FILE='{w}/data.csv'"),
     "data.csv: use a .tsv or .jsonl file"),
    ("train_file_not_utf8", "prompt_tune", lambda a, w: replace(a, "--gin.TRAIN_FILE", f"--gin.TRAIN_FILE='{w}/binary.tsv'"),
     "binary.tsv is not UTF-8 text"),
    # Model, task, modules, names.
    ("checkpoint_missing", "prompt_tune", lambda a, w: replace(a, "--gin.INITIAL_CHECKPOINT_PATH", "--gin.INITIAL_CHECKPOINT_PATH='/no/such/checkpoint'"),
     "/no/such/checkpoint does not exist"),
    ("checkpoint_is_a_model_dir", "prompt_tune", lambda a, w: replace(a, "--gin.INITIAL_CHECKPOINT_PATH", f"--gin.INITIAL_CHECKPOINT_PATH='{w}/models'"),
     "is a T5X model directory, not a checkpoint"),
    ("unknown_task", "prompt_tune", lambda a, w: [x for x in a if "text_files" not in x and "_FILE=" not in x and "VOCAB_PATH" not in x] + [
        "--gin.MIXTURE_OR_TASK_NAME='no_such_task'"], "Unknown task 'no_such_task'"),
    ("task_module_missing", "prompt_tune", lambda a, w: a + ["--gin.MIXTURE_OR_TASK_MODULE='no_such_module_q'"],
     "MIXTURE_OR_TASK_MODULE='no_such_module_q' cannot be imported"),
    ("cached_tasks", "prompt_tune", lambda a, w: a + ["--gin.USE_CACHED_TASKS=True"],
     "has no offline cache"),
    ("typo_in_a_macro", "prompt_tune", lambda a, w: a + ["--gin.TRAIN_STEP=3"],
     "TRAIN_STEP (set by a --gin binding) is not read by this run"),
    ("t5x_name_with_another_spelling", "prompt_tune", lambda a, w: a + ["--gin.EVAL_STEPS=3"],
     "ptjax's name is MAX_EVAL_EXAMPLES"),
    ("missing_gin_file", "prompt_tune", lambda a, w: a + ["--gin_file=prompts/no_such.gin"],
     "'prompts/no_such.gin' not found"),
    ("model_dir_under_a_file", "prompt_tune", lambda a, w: replace(a, "--gin.MODEL_DIR", f"--gin.MODEL_DIR='{w}/a_file/run'"),
     "a_file"),
    ("prompt_file_and_model_tuning", "model_tune", lambda a, w: a + ["--gin_file=gin/prompts/class_labels.gin", "--gin.CLASS_LABELS=['yes']"],
     "PROMPT_INIT (set by ptjax's gin/prompts/class_labels.gin) is not read by this run"),
    # Evaluation and inference.
    ("eval_training_setting", "eval", lambda a, w: a + ["--gin.TRAIN_STEPS=3"],
     "TRAIN_STEPS (set by a --gin binding) is not read by this run"),
    ("eval_prompt_file_missing", "eval", lambda a, w: a + [f"--gin.PROMPT_FILE='{w}/nope.npy'"],
     "nope.npy"),
    ("eval_with_a_prompt_init", "eval", lambda a, w: a + ["--gin_file=gin/prompts/class_labels.gin", "--gin.CLASS_LABELS=['yes']"],
     "evaluation reads a trained prompt (PROMPT_FILE or MODEL_DIR): drop the prompts/ gin file"),
    ("eval_max_examples_zero", "eval", lambda a, w: a + ["--gin.MAX_EVAL_EXAMPLES=0"],
     "MAX_EVAL_EXAMPLES=0 must be a positive integer"),
    ("eval_split_missing", "eval", lambda a, w: a + [f"--gin.PROMPT_FILE='{w}/p.npy'", "--gin.EVAL_SPLIT='test'"],
     "ptjax_text_task has no 'test' split"),
    ("infer_batch_size_negative", "infer", lambda a, w: replace(a, "--gin.BATCH_SIZE", "--gin.BATCH_SIZE=-2"),
     "BATCH_SIZE=-2 must be a positive integer"),
]


@pytest.mark.parametrize("name,run,change,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(name, run, change, expected, world, capsys):
  np.save(world / "p.npy", np.zeros((3, INLINE_CONFIG.emb_dim), np.float32))
  code, last, err = run_main(change(base(world, run), world), capsys)
  assert code == 2, err[-2000:]
  assert "Traceback" not in err
  assert last.startswith("error: ") and expected in last, err[-1500:]


# --- The experiments and convert CLIs --------------------------------------------------

def run_experiments(argv, capsys):
  import runpy
  saved = sys.argv
  sys.argv = ["python -m ptjax.experiments", *argv]
  try:
    runpy.run_module("ptjax.experiments", run_name="__main__")
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 2
    if not isinstance(e.code, int):
      print(e.code, file=sys.stderr)
  finally:
    sys.argv = saved
  err = capsys.readouterr().err
  return code, err.strip().splitlines()[-1] if err.strip() else "", err


@pytest.mark.parametrize("argv,expected", [
    (["run", "fig9"], "Unknown grid 'fig9'"),
    (["list", "fig1_scale", "--sizes=huge"], "Sizes ['huge'] are not in the t5 family"),
    (["status"], "status needs a GRID"),
    (["run", "fig1_scale", "--set=TRAIN_STEP=3", "--dry_run"],
     "--set TRAIN_STEP: no ptjax macro has that name"),
], ids=["unknown_grid", "unknown_size", "no_grid", "set_typo"])
def test_bad_experiments_input_is_one_line(argv, expected, capsys):
  code, last, err = run_experiments(argv, capsys)
  assert code == 2 and "Traceback" not in err and expected in last, err


def test_a_corrupt_cell_json_names_the_file(tmp_path, capsys):
  cell = tmp_path / "fig1_scale" / "size=small" / "seed_0"
  cell.mkdir(parents=True)
  (cell / "cell.json").write_text('{"grid": "fig1_sc')  # What a kill mid-write left.
  code, last, err = run_experiments(["table", "fig1_scale", f"--root={tmp_path}"], capsys)
  assert code == 2 and "Traceback" not in err
  assert f"{cell}/cell.json is not valid JSON" in last and "delete it" in last


@pytest.mark.parametrize("argv,expected", [
    (["--input=/no/such", "--output={out}", "--format=t5x"], "/no/such does not exist"),
    (["--input={ckpt}", "--output={out}", "--format=hf"], "needs --config"),
    (["--input={ckpt}", "--output={out}", "--format=hf", "--config=giant"],
     "--config 'giant' is neither a preset"),
    (["--input={ckpt}", "--output={full}", "--format=t5x"], "already exists and is not empty"),
    (["--input={full}/", "--output={full}", "--format=t5x", "--layout=scanned", "--overwrite"],
     "is the input's own folder: writing there replaces the checkpoint being read"),
    (["--input={full}/checkpoint", "--output={full}", "--format=t5x", "--overwrite"],
     "is the input's own folder"),
], ids=["input_missing", "hf_without_config", "unknown_config", "output_not_empty",
        "in_place", "in_place_file"])
def test_bad_convert_input_is_one_line(argv, expected, tmp_path, capsys):
  from ptjax import convert
  # A user's folder: a checkpoint and a file of their own, neither touched by a refusal.
  (tmp_path / "full").mkdir()
  shutil.copy(shared_fixture(INLINE_CKPT), tmp_path / "full" / "checkpoint")
  (tmp_path / "full" / "keep.txt").write_text("mine")
  before = sorted(os.listdir(tmp_path / "full"))
  values = {"out": str(tmp_path / "out"), "full": str(tmp_path / "full"),
            "ckpt": shared_fixture(INLINE_CKPT)}
  code = convert.main([a.format(**values) for a in argv])
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err and expected in err.strip().splitlines()[-1]
  assert not (tmp_path / "out").exists()
  assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
  assert sorted(os.listdir(tmp_path / "full")) == before


@pytest.mark.parametrize("module,argv,expected", [
    ("ptjax.convert", ["--input=a", "--output=b"],
     "python -m ptjax.convert: error: the following arguments are required: --format"),
    ("ptjax.convert", ["--input=a", "--output=b", "--format=t5x", "--layout=diagonal"],
     "argument --layout: invalid choice: 'diagonal'"),
    ("ptjax.prompts.extract", ["--input=a", "--output=b", "--format=pkl"],
     "python -m ptjax.prompts.extract: error: argument --format: invalid choice: 'pkl'"),
    ("ptjax.data.show_tasks", ["-n", "three"],
     "python -m ptjax.data.show_tasks: error: argument -n: invalid int value: 'three'"),
    ("ptjax.experiments.__main__", ["rerun"],
     "python -m ptjax.experiments: error: argument command: invalid choice: 'rerun'"),
    ("ptjax.plan", ["--batch", "many"],
     "python -m ptjax.plan: error: argument --batch: invalid int value: 'many'"),
], ids=["convert_required", "convert_choice", "extract", "show_tasks", "experiments", "plan"])
def test_a_bad_flag_is_one_line_not_the_usage_block(module, argv, expected, capsys):
  """argparse prints its usage block before the line that says what is wrong; every ptjax
  command line says that line alone (console.ArgumentParser), exit 2."""
  import importlib
  main = importlib.import_module(module).main
  with pytest.raises(SystemExit) as exit_:
    main(argv)
  out, err = capsys.readouterr()
  assert exit_.value.code == 2 and out == ""
  assert len(err.strip().splitlines()) == 1 and expected in err and "usage:" not in err, err


def test_an_unreachable_gs_vocabulary_is_one_line_before_any_dataset_is_built(monkeypatch):
  """T5's vocabulary defaults to gs://t5-data; offline, reading it inside tf.data's trace
  was a 100-line StagingError. `get_task` reads it first: one line naming the switch."""
  import seqio

  from ptjax import files
  from ptjax.data import pipeline, vocabularies

  def unreachable(path):
    raise files.StorageError(f"{path}: cannot read (ClientConnectorDNSError: no network).")

  monkeypatch.setattr(files, "read_bytes", unreachable)
  vocab = vocabularies.SentencePieceVocabulary("gs://t5-data/spm/sentencepiece.model", 100)
  name = "pt_test_unreachable_vocabulary"
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(lambda split, shuffle_files: None, ["validation"]),
      output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)})
  try:
    with pytest.raises(files.StorageError) as error:
      pipeline.get_task(name)
  finally:
    seqio.TaskRegistry.remove(name)
  assert str(error.value) == (
      "gs://t5-data/spm/sentencepiece.model: cannot read (ClientConnectorDNSError: no "
      "network). Offline: point PTJAX_T5_VOCAB at a local copy of T5's sentencepiece.model.")


@pytest.mark.parametrize("argv,expected", [
    (["ptjax.data.show_tasks", "--bogus"],
     "python -m ptjax.data.show_tasks: error: unrecognized arguments: --bogus (see --help)"),
    (["ptjax.experiments", "run"], "error: run needs a GRID: one of ['fig1_scale', "),
], ids=["show_tasks", "experiments"])
def test_commands_that_import_tensorflow_print_the_error_line_alone(argv, expected):
  """TensorFlow's C++ start-up lines (absl, oneDNN, CUDA probing: 6 lines) came before the
  error of every call; these commands start quiet, as ptjax.main does."""
  import subprocess
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                        env={**env, "JAX_PLATFORMS": "cpu"}, timeout=300)
  assert proc.returncode == 2 and proc.stdout == ""
  assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(expected), proc.stderr
