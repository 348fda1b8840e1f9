"""The configuration surface a T5X / prompt-tuning user meets: any order of gin files gives
the same experiment, T5X's names with T5X's meanings (or a one-line error naming ptjax's),
every setting read or refused, ptjax's gin files found from any working directory, and the
official prompt-tuning command (translated by docs/coming_from_t5x.md) run end to end."""

import itertools
import os
import re
import shlex
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

import ptjax.data.mini_tasks  # noqa: F401 (registers the tasks, as ptjax.main does)
import ptjax.data.tasks  # noqa: F401
from ptjax.checkpoints import load_checkpoint, save_t5x
from ptjax.data import vocabularies
from ptjax.train import gin_utils, t5x_names, trainer, utils

from conftest import INLINE_CKPT, INLINE_CONFIG, ROOT, shared_fixture

LABELS = ["positive", "negative"]


def write_tsv(folder, rows=24):
  paths = {}
  for split in ("train", "validation"):
    path = os.path.join(folder, f"{split}.tsv")
    with open(path, "w") as f:
      f.write("inputs\ttargets\n")
      for i in range(rows):
        f.write(f"sentence: a {'good' if i % 2 else 'bad'} film {i}\t{LABELS[i % 2]}\n")
    paths[split] = path
  return paths


@pytest.fixture
def task_files(tmp_path):
  return write_tsv(str(tmp_path))


def parse(files, bindings):
  gin.clear_config()
  return gin_utils.parse(files, bindings)


def run_kwargs(selector="ptjax.train.trainer.train"):
  """The run function's arguments as gin will call it (references evaluated)."""
  return gin.get_bindings(selector)


def base_bindings(task_files, tmp_path):
  return [f"MODEL_DIR='{tmp_path}/run'", f"TRAIN_FILE='{task_files['train']}'",
          f"VALIDATION_FILE='{task_files['validation']}'",
          f"VOCAB_PATH='{shared_fixture('t5_vocab/sentencepiece.model')}'",
          f"INITIAL_CHECKPOINT_PATH='{shared_fixture(INLINE_CKPT)}'", "TRAIN_STEPS=3",
          "PROMPT_LENGTH=6"]


FILES = {"model": "models/t5_1_1_tiny.gin", "run": "runs/prompt_tune.gin",
         "task": "tasks/text_files.gin"}


@pytest.mark.parametrize("init", ["class_labels", "from_file"])
def test_every_order_of_model_prompt_run_task_files_is_the_same_experiment(
    init, task_files, tmp_path):
  """Acceptance 1: the official order is models -> prompts -> runs; ptjax gives the same
  operative config and the same initial prompt in all 24 orders."""
  _, params = load_checkpoint(shared_fixture(INLINE_CKPT), INLINE_CONFIG)
  embedding = params["token_embedder"]["embedding"]
  vocab = vocabularies.t5_vocabulary(shared_fixture("t5_vocab/sentencepiece.model"))
  prompt_file = str(tmp_path / "start.npy")
  start = np.random.default_rng(0).normal(size=(6, INLINE_CONFIG.emb_dim)).astype(np.float32)
  np.save(prompt_file, start)
  extra = ([f"CLASS_LABELS={LABELS!r}"] if init == "class_labels" else
           [f"PROMPT_FILE='{prompt_file}'"])
  files = dict(FILES, prompt=f"prompts/{init}.gin")
  configs = set()
  for order in itertools.permutations(["model", "prompt", "run", "task"]):
    parse([files[k] for k in order], base_bindings(task_files, tmp_path) + extra)
    configs.add(gin.config_str())
    prompt = run_kwargs()["prompt"]
    value = np.asarray(prompt.init(jax.random.PRNGKey(0), (6, INLINE_CONFIG.emb_dim),
                                   embedding))
    if init == "class_labels":
      for row, label in enumerate(LABELS):
        expected = embedding[np.asarray(vocab.encode(label))].mean(axis=0)
        np.testing.assert_allclose(value[row], expected, rtol=1e-6, err_msg=str(order))
      # The rest: sampled vocabulary rows (the paper's fill), not random uniform.
      assert all(any(np.array_equal(r, e) for e in embedding[:5000]) for r in value[2:])
    else:
      np.testing.assert_array_equal(value, start, err_msg=str(order))
  assert len(configs) == 1  # The same full config, whatever the order.


def test_model_tuning_is_prompt_tuning_without_the_prompt(task_files, tmp_path):
  parse([FILES["model"], "runs/model_tune.gin", FILES["task"]],
        base_bindings(task_files, tmp_path)[:-1])
  kwargs = run_kwargs()
  assert kwargs["prompt"] is None and kwargs["trainable"] is None
  assert kwargs["trainer"].learning_rate is None  # 0.001 without a prompt (trainer.train).


def test_a_prompt_file_with_model_tuning_is_refused(task_files, tmp_path):
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"^PROMPT_INIT \(set by ptjax's gin/prompts/class_labels.gin\) is "
                           r"not read by this run"):
    parse([FILES["model"], "runs/model_tune.gin", "prompts/class_labels.gin", FILES["task"]],
          base_bindings(task_files, tmp_path)[:-1] + [f"CLASS_LABELS={LABELS!r}"])


# T5X / prompt-tuning names that work with T5X's meaning: the binding, and where its value
# lands in `trainer.train`'s arguments.
SAME = [
    ("BATCH_SIZE=8", lambda kw: kw["train_dataset_cfg"].batch_size, 8),
    ("EVAL_PERIOD=7", lambda kw: kw["eval_period"], 7),
    ("TRAIN_STEPS=1_150_000", lambda kw: kw["total_steps"], 1_150_000),
    ("TRAIN_STEPS_RELATIVE=9", lambda kw: kw["relative_steps"], 9),
    ("RANDOM_SEED=5", lambda kw: kw["random_seed"], 5),
    ("USE_CACHED_TASKS=True", lambda kw: kw["train_dataset_cfg"].use_cached, True),
    ("MIXTURE_OR_TASK_MODULE='json'", lambda kw: kw["train_dataset_cfg"].module, "json"),
    ("Z_LOSS=0.5", lambda kw: kw["trainer"].loss.z_loss, 0.5),
    ("LABEL_SMOOTHING=0.1", lambda kw: kw["trainer"].loss.label_smoothing, 0.1),
    ("DROPOUT_RATE=0.3", lambda kw: kw["model_config"].dropout_rate, 0.3),
    ("ACTIVATION_DTYPE='bfloat16'", lambda kw: kw["model_config"].dtype, "bfloat16"),
    ("TASK_FEATURE_LENGTHS={'inputs': 9, 'targets': 3}",
     lambda kw: dict(kw["train_eval_dataset_cfg"].task_feature_lengths),
     {"inputs": 9, "targets": 3}),
    ("utils.SaveCheckpointConfig.period=11", lambda kw: kw["checkpoint_cfg"].save.period, 11),
    ("utils.SaveCheckpointConfig.keep=7", lambda kw: kw["checkpoint_cfg"].save.keep, 7),
    ("utils.RestoreCheckpointConfig.dtype='bfloat16'",
     lambda kw: kw["checkpoint_cfg"].restore.dtype, "bfloat16"),
    ("train/utils.DatasetConfig.batch_size=4",
     lambda kw: (kw["train_dataset_cfg"].batch_size, kw["train_eval_dataset_cfg"].batch_size),
     (4, 32)),
    ("utils.DatasetConfig.split='test'", lambda kw: (kw["train_dataset_cfg"].split,
                                                     kw["train_eval_dataset_cfg"].split),
     ("train", "test")),
    ("train/utils.DatasetConfig.seed=3", lambda kw: kw["train_dataset_cfg"].seed, 3),
    ("partitioning.PjitPartitioner.num_partitions=2",
     lambda kw: kw["partitioner"].num_partitions, 2),
    ("partitioning.PjitPartitioner.model_parallel_submesh=(1, 1, 1, 1)",
     lambda kw: dict(kw["partitioner"].mesh().shape), {"data": 1, "model": 1}),
    ("trainer.Trainer.num_microbatches=4", lambda kw: kw["trainer"].num_microbatches, 4),
]


@pytest.mark.parametrize("binding,get,expected", SAME, ids=[s[0].split("=")[0] for s in SAME])
def test_t5x_name_works_with_t5x_meaning(binding, get, expected, task_files, tmp_path):
  bindings = [b for b in base_bindings(task_files, tmp_path) if not (
      binding.startswith("TRAIN_STEPS") and b.startswith("TRAIN_STEPS"))]
  parse([FILES["model"], FILES["run"], FILES["task"]], bindings + [binding])
  assert get(run_kwargs()) == expected


REFUSED = [(row.t5x, row) for row in t5x_names.TABLE if row.status != "same"
           and not row.t5x.startswith("--")]


@pytest.mark.parametrize("name,row", REFUSED, ids=[r[0] for r in REFUSED])
def test_t5x_name_without_equivalent_meaning_is_one_line_error_naming_ptjax(
    name, row, task_files, tmp_path):
  binding = f"{name}=1" if "." in name or name.isupper() else f"{name}.x=1"
  if name in ("utils.create_learning_rate_scheduler", "adafactor.Adafactor",
              "prompts.Prompt"):
    binding = f"{name}.decay_rate=1"
  with pytest.raises(gin_utils.GinConfigError) as error:
    parse([FILES["model"], FILES["run"], FILES["task"]],
          base_bindings(task_files, tmp_path) + [binding])
  message = str(error.value)
  assert "\n" not in message and name.split(".")[0] in message
  assert (row.ptjax in message) if row.status == "maps" else (row.note in message)


@pytest.mark.parametrize("binding,name", [
    ("TRAIN_STEP=3", "TRAIN_STEP"),                       # A typo of a macro.
    ("BATCHSIZE=3", "BATCHSIZE"),
    ("trainer.Trainer.num_microbatch=4", "num_microbatch"),  # gin knows the configurable.
    ("utils.DatasetConfig.spilt='test'", "spilt"),
])
def test_an_unread_or_misspelt_binding_fails_naming_it(binding, name, task_files, tmp_path):
  with pytest.raises(gin_utils.GinConfigError, match=re.escape(name)):
    parse([FILES["model"], FILES["run"], FILES["task"]],
          base_bindings(task_files, tmp_path) + [binding])


def test_an_unquoted_string_value_is_one_line_saying_quote_it(task_files, tmp_path):
  with pytest.raises(gin_utils.GinConfigError) as error:
    parse([FILES["model"], FILES["run"], FILES["task"]],
          base_bindings(task_files, tmp_path) + ["FROZEN_DTYPE=bfloat16"])
  assert str(error.value) == ("gin value 'bfloat16' is not a Python literal: quote strings, "
                              "e.g. --gin.NAME=\"'bfloat16'\" (a reference is written "
                              "@name()).")
  with pytest.raises(gin_utils.GinConfigError) as error:  # Not "quote it": 'true' is refused.
    parse([FILES["model"], FILES["run"], FILES["task"]],
          base_bindings(task_files, tmp_path) + ["SCAN_LAYERS=true"])
  assert str(error.value) == ("gin value 'true' is not a Python literal: write True (Python's "
                              "spelling), e.g. --gin.NAME=True.")


@pytest.mark.parametrize("binding, message", [
    ("FROZEN_DTYPE='float16'", "FROZEN_DTYPE (utils.RestoreCheckpointConfig.dtype)='float16': "
                               "use 'float32' or 'bfloat16'."),
    ("SCAN_LAYERS=1", "SCAN_LAYERS (T5Config.scan_layers)=1 must be True or False."),
])
def test_a_bad_large_model_setting_names_its_macro(binding, message, task_files, tmp_path):
  parse([FILES["model"], FILES["run"], FILES["task"]],
        base_bindings(task_files, tmp_path) + [binding])
  with pytest.raises(ValueError) as error:
    run_kwargs()  # Evaluates the configs, as the run does.
  assert str(error.value).splitlines()[0] == message  # gin adds a line naming the call.


def test_a_setting_in_a_user_file_that_nothing_reads_names_the_file(task_files, tmp_path):
  mine = tmp_path / "mine.gin"
  mine.write_text("EVAL_PERIODS = 3\n")
  with pytest.raises(gin_utils.GinConfigError, match=r"^EVAL_PERIODS \(set by .*mine.gin\)"):
    parse([FILES["model"], FILES["run"], FILES["task"], str(mine)],
          base_bindings(task_files, tmp_path))


def test_eval_refuses_training_settings(task_files, tmp_path):
  with pytest.raises(gin_utils.GinConfigError, match=r"^TRAIN_STEPS \(set by a --gin "
                                                     r"binding\) is not read by this run"):
    parse([FILES["model"], "runs/eval.gin", FILES["task"]], base_bindings(task_files, tmp_path))
  # Even when the value equals the default (gin keeps one object for small ints).
  no_steps = [b for b in base_bindings(task_files, tmp_path) if "STEPS" not in b]
  with pytest.raises(gin_utils.GinConfigError, match=r"^RANDOM_SEED \(set by a --gin binding"):
    parse([FILES["model"], "runs/eval.gin", FILES["task"]], no_steps + ["RANDOM_SEED=0"])


def test_a_required_macro_nobody_set_fails_when_read(task_files, tmp_path):
  parse([FILES["model"], FILES["run"], FILES["task"]],
        [b for b in base_bindings(task_files, tmp_path) if not b.startswith("MODEL_DIR")])
  with pytest.raises(ValueError, match=r"MODEL_DIR is not set: pass --gin.MODEL_DIR="):
    run_kwargs()


def test_steps_are_absolute_as_in_t5x():
  assert trainer.resolve_steps(1_100_000, 1_150_000, None) == 1_150_000
  assert trainer.resolve_steps(1_100_000, None, 50_000) == 1_150_000
  with pytest.raises(ValueError, match=r"TRAIN_STEPS=30000 is not after the initial "
                                       r"checkpoint's step 1,100,000: TRAIN_STEPS is absolute"):
    trainer.resolve_steps(1_100_000, 30_000, None)
  with pytest.raises(ValueError, match="Set exactly one of TRAIN_STEPS"):
    trainer.resolve_steps(0, 10, 10)
  with pytest.raises(ValueError, match="Set exactly one of TRAIN_STEPS"):
    trainer.resolve_steps(0, None, None)


# --- Where gin files are found --------------------------------------------------------

@pytest.mark.parametrize("folders", [["runs"], ["models", "prompts", "runs", "tasks"]])
def test_folders_named_like_ptjax_gin_folders_in_the_cwd_change_nothing(
    folders, task_files, tmp_path, monkeypatch):
  cwd = tmp_path / "cwd"
  for folder in folders:
    (cwd / folder).mkdir(parents=True)
  monkeypatch.chdir(cwd)
  parse(["models/t5_1_1_lm100k_base.gin", "runs/infer.gin", FILES["task"]],
        [b for b in base_bindings(task_files, tmp_path) if "STEPS" not in b
         and "PROMPT_LENGTH" not in b])
  assert gin.query_parameter("ptjax.train.evaluation.evaluate.output_subdir") == "infer"


def test_a_file_in_the_cwd_never_replaces_ptjax_s_include(task_files, tmp_path, monkeypatch):
  cwd = tmp_path / "cwd"
  for name in ("runs/prompt_tune.gin", "models/t5_1_1_base.gin", "runs/eval.gin"):
    (cwd / name).parent.mkdir(parents=True, exist_ok=True)
    (cwd / name).write_text("import os\nTRAIN_STEPS = 99\n")  # Would run code, set steps.
  monkeypatch.chdir(cwd)
  # model_tune.gin includes runs/prompt_tune.gin; lm100k_base includes models/t5_1_1_base.
  origin = parse(["models/t5_1_1_lm100k_base.gin", "runs/model_tune.gin", FILES["task"]],
                 [b for b in base_bindings(task_files, tmp_path) if "PROMPT" not in b])
  assert run_kwargs()["total_steps"] == 3
  assert not any(str(cwd) in source for source in origin.values())
  # A top-level name that is both a local file and ptjax's, with other contents: refused.
  with pytest.raises(gin_utils.GinConfigError, match=r"'runs/eval.gin' is both .*cwd/runs/"
                                                     r"eval.gin and ptjax's"):
    parse([FILES["model"], "runs/eval.gin"], [])
  # ./ says "mine".
  with pytest.raises(gin_utils.GinConfigError, match=r"TRAIN_STEPS \(set by runs/eval.gin\)"):
    parse([FILES["model"], "./runs/eval.gin"], [])


def test_gin_prefix_and_absolute_paths_name_the_same_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  package = gin_utils.resolve("runs/eval.gin")
  assert package == os.path.join(gin_utils.GIN_DIR, "runs", "eval.gin")
  assert gin_utils.resolve("gin/runs/eval.gin") == package == gin_utils.resolve(package)
  with pytest.raises(gin_utils.GinConfigError, match="'runs/nope.gin' not found"):
    gin_utils.resolve("runs/nope.gin")


# --- The official command, translated ---------------------------------------------------

TASK_MODULE = """
from ptjax.data import text_tasks, vocabularies
text_tasks.text_task('taskless_glue_sst2_v200_examples',
                     {{'train': {train!r}, 'validation': {validation!r}}},
                     vocabularies.t5_vocabulary())
"""


def documented_official_command() -> str:
  """The translated sst2-demo command as docs/coming_from_t5x.md shows it."""
  doc = open(os.path.join(ROOT, "docs", "coming_from_t5x.md")).read()
  block = doc.split("## The official demo, translated")[1].split("```bash\n")[1].split("```")[0]
  return block.replace("\\\n", " ")


# The documented rules that turn it into a CI run: the tiny test model for base, inputs of
# 16 tokens, 3 steps after the fixture's step 1,100,000, a small batch, frequent saves.
SHRINK = {"gin/models/t5_1_1_base.gin": "gin/models/t5_1_1_tiny.gin",
          "{'inputs': 512, 'targets': 8}": "{'inputs': 16, 'targets': 4}",
          "1_150_000": "1_100_003"}


def test_official_prompt_tuning_command_translated_runs_as_in_t5x(tmp_path):
  """prompt-tuning's sst2-demo.sh, translated only by docs/coming_from_t5x.md (the command
  is read from there), on a T5X checkpoint at step 1,100,000: the task comes from
  MIXTURE_OR_TASK_MODULE, the vocabulary from PTJAX_T5_VOCAB alone, and
  TRAIN_STEPS=1_100_003 trains 3 steps."""
  files = write_tsv(str(tmp_path))
  (tmp_path / "my_sst2_tasks.py").write_text(TASK_MODULE.format(**files))
  _, params = load_checkpoint(shared_fixture(INLINE_CKPT), INLINE_CONFIG)
  checkpoint = save_t5x(params, str(tmp_path / "checkpoint_1100000"), step=1_100_000)
  model_dir = tmp_path / "model"
  command = documented_official_command()
  for old, new in SHRINK.items():
    assert old in command
    command = command.replace(old, new)
  variables = {"MODEL_DIR": str(model_dir), "PRETRAINED_MODEL": checkpoint,
               "TFDS_DATA_DIR": str(tmp_path / "tfds")}
  for name, value in variables.items():
    command = command.replace("${" + name + "}", value)
  args = shlex.split(command)
  assert args[:3] == ["python", "-m", "ptjax.main"]
  args = [sys.executable] + args[1:] + [
      # Shrunk for CI (documented above): batch, periods, microbatches, log lines.
      "--gin.BATCH_SIZE=8", "--gin.EVAL_PERIOD=3", "--gin.SAVING_PERIOD=2",
      "--gin.trainer.Trainer.num_microbatches=2", "--gin.trainer.Trainer.log_every=1"]
  # As a user's shell has it: no TF_CPP_MIN_LOG_LEVEL (scripts/venv.sh sets one for CI).
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env.update({"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(tmp_path),
              "PTJAX_T5_VOCAB": shared_fixture("t5_vocab/sentencepiece.model")})
  proc = subprocess.run(args, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "steps 1,100,000 -> 1,100,003 (3 to go)" in proc.stdout
  for noise in ("cuInit", "oneDNN", "cuda drivers", "InitializeLog", "uncached FunctionDataset"):
    assert noise not in proc.stderr + proc.stdout  # A quiet console (ptjax.console).
  assert re.search(r"^step 1,100,003: loss \d", proc.stdout, re.M)
  assert sorted(os.listdir(model_dir / "checkpoints")) == ["1100002", "1100003"]
  assert os.path.exists(model_dir / "eval" / "taskless_glue_sst2_v200_examples" /
                        "step_1100003.metrics.json")
  assert np.load(model_dir / "prompt.npy").shape == (100, INLINE_CONFIG.emb_dim)
  # Run again: nothing left to train; the finished run reports its result.
  again = subprocess.run(args, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "steps 1,100,003 -> 1,100,003 (nothing to go" in again.stdout
  # Below the checkpoint's step, as T5X: refused in one line.
  bad = subprocess.run([a if not a.startswith("--gin.TRAIN_STEPS=") else
                        "--gin.TRAIN_STEPS=30000" for a in args], cwd=str(tmp_path),
                       env=env, capture_output=True, text=True, timeout=600)
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 2 and "TRAIN_STEPS=30000 is not after the initial checkpoint's " \
      "step 1,100,000" in last and "Traceback" not in bad.stderr


def test_missing_vocabulary_is_one_line_naming_the_path_and_the_switch(tmp_path):
  args = [sys.executable, "-m", "ptjax.main", "--gin_file=gin/models/t5_1_1_tiny.gin",
          "--gin_file=gin/runs/eval.gin", f"--gin.MODEL_DIR='{tmp_path}'",
          "--gin.MIXTURE_OR_TASK_NAME='pt_super_glue_rte_v102'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{shared_fixture(INLINE_CKPT)}'"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PTJAX_T5_VOCAB": "/no/such/spm.model"}
  proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  last = proc.stderr.strip().splitlines()[-1]
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "/no/such/spm.model" in last and "PTJAX_T5_VOCAB" in last


def test_docs_table_is_the_code_table():
  doc = open(os.path.join(ROOT, "docs", "coming_from_t5x.md")).read()
  for row in t5x_names.TABLE:
    assert f"| `{row.t5x}` | {row.status} |" in doc, row.t5x
  counts = t5x_names.counts()
  assert f"{counts['same']} work as in T5X, {counts['maps']} map to a ptjax name, " \
         f"{counts['error']} are refused" in doc
  assert sum(counts.values()) >= 15


@pytest.mark.parametrize("size", ["tiny", "small", "base", "large", "xl", "xxl", "mini_small",
                                  "mini_base", "mini_large", "mini_xl"])
def test_model_gin_files_are_the_presets(size):
  """Model sizes live in ptjax.model.config.PRESETS; each gin model file says the same."""
  from ptjax.model import preset
  names = [f"models/t5_1_1_{size}.gin"]
  if size in ("small", "base", "large", "xl", "xxl"):
    names.append(f"models/t5_1_1_lm100k_{size}.gin")
  for name in names:
    gin.clear_config()
    gin_utils.parse([name, "runs/serve.gin"], ["TASK_PROMPTS={}",
                                               "INITIAL_CHECKPOINT_PATH='unused'"])
    config = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
    assert config == preset(size, dropout_rate=0.1), name


def test_use_cached_tasks_on_a_task_without_cache_is_one_line():
  from ptjax.data import pipeline
  with pytest.raises(ValueError, match=r"^USE_CACHED_TASKS=True, but pt_mini_rte has no "
                                       r"offline cache .*set USE_CACHED_TASKS=False\.$"):
    pipeline.batches("pt_mini_rte", {"inputs": 8, "targets": 4}, "train", 4, use_cached=True)


def test_mixture_or_task_module_that_cannot_be_imported_is_one_line():
  with pytest.raises(ValueError, match=r"^MIXTURE_OR_TASK_MODULE='no_such_module_x' cannot be "
                                       r"imported"):
    utils.DatasetConfig("pt_mini_rte", {"inputs": 8, "targets": 4}, "train", 4,
                        module="no_such_module_x")


def test_a_run_never_resumes_another_experiment_s_checkpoints(tmp_path):
  """The demo run again with another task file but the same MODEL_DIR resumed the first
  task's checkpoints and reported them as the second task's results."""
  rte = {"mixture_or_task_name": "pt_mini_rte", "initial_checkpoint_path": "m",
         "prompt_length": 20, "trainable": ["prompt/.*"]}
  trainer._check_same_run(str(tmp_path), rte, resuming=False)
  trainer._check_same_run(str(tmp_path), rte, resuming=True)  # The same run: resumes.
  with pytest.raises(ValueError, match=r"holds checkpoints of another run \("
                                       r"mixture_or_task_name='pt_mini_rte'; this one has "
                                       r"mixture_or_task_name='pt_mini_cb'\): use a new "
                                       r"MODEL_DIR\.$"):
    trainer._check_same_run(str(tmp_path), dict(rte, mixture_or_task_name="pt_mini_cb"),
                            resuming=True)
