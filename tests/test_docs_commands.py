"""Every command shown in README.md and docs/**/*.md is run here (the project's rule: "every
command shown in README.md and docs/ is run by a test; running a command twice must work
too"). The commands are read from the docs at test time, never copied into this file.

What counts as a command (tests/docs_rules.py, `extract`):
  - a line of a fenced code block with no language, `bash`, `sh` or `shell` that starts with
    `python`, `./`, `bash`, `pip`, `gcloud` or `.venv/`; backslash continuations are joined
    and a trailing `# comment` is removed;
  - an inline code span that is a whole command starting with `python -m ptjax` or
    `./scripts/` (a span may run over a line break).
  The test id is `file:line` (`#2` when one line shows two commands).

Placeholders: a standalone `...` in a block line stands for the preceding command of the
same block: its gin macro bindings (`--gin.NAME=VALUE`, NAME upper case) that the line does
not set itself are put in its place, except ELLIPSIS_NOT_CARRIED (what only the preceding
training reads: steps, periods, the prompt's initialisation; ptjax refuses a setting the
run does not read); gin files are not carried: a line names its own run. So the README's
eval line after the training line evaluates, with the same task files, MODEL_DIR, lengths
and dtype, the prompt the training wrote. Other placeholders (`--zone=...`,
`INITIAL_CHECKPOINT_PATH=...`, `RUN`, `GRID`, `SIZE`, `PATH`, `DIR`, `{t5x,hf}`, shell
variables `${NAME}`: SHELL_VARS) are filled by the rule of their command (below).

How every command runs here: it must match exactly one rule of RULES (a regular expression
over the command's text); the rule says how it runs offline, in seconds, and what it must
print or write. A command without a rule fails its test ("documented command without a
rule: add one"). Common to all rules:
  - environment JAX_PLATFORMS=cpu, TF_CPP_MIN_LOG_LEVEL=3, a timeout, and one XLA
    compilation cache per session (JAX_COMPILATION_CACHE_DIR): the shrunk programs are the
    same across commands, so they compile once;
  - `python` is this interpreter (the project's .venv); `python -m ptjax...` commands run in a
    scratch folder that mirrors the clone's top level by symlinks (relative paths of the docs
    resolve; what a command writes into its cwd stays in tmp);
  - absolute local paths (`/tmp/...`, `/data/...`) are re-rooted under one session tmp
    folder, so commands that share a path in the docs share it here (the demo's
    /tmp/ptjax_demo/prompt_tuning is what the serving and neighbour commands read);
  - identical commands (the README shows `./scripts/demo.sh` four times) run once and every
    test case of them checks that run;
  - the bindings that make runs small are the constants below (DEMO_SHRINK, T5_SHRINK per
    run gin, PRETRAIN_STEPS, PRETRAIN_SHRINK): edit them when gin names change. A shrinking
    binding that no gin file of the repository mentions fails the test (a rename would
    silently un-shrink the run); gin itself refuses unknown parameters;
  - the expensive subprocess runs start in BACKGROUND_THREADS threads as soon as the
    module's first test runs (only those of the selected tests); the tests wait for their
    own results. Every scripts/*.sh begins with scripts/venv.sh's `pip install -e .`, and
    two at once race: a script starts only when the one before it has written to stdout
    (venv.sh writes nothing there) or ended; `--durations` (or -v) prints each run's time;
  - "running twice": test_documented_command_twice runs the commands of TWICE_RULES a second
    time on the first run's outputs; KNOWN_FAILURES marks what fails today (xfail strict:
    the marker must go when it is fixed).

The rules, one by one (RULES' notes, generated):
"""

import ast
import glob
import json
import os
import re
import shlex
import sys
import textwrap
import threading
import time
from concurrent import futures

import numpy as np
import pytest

import docs_rules
from conftest import INLINE_CKPT, shared_fixture
from docs_rules import ROOT, Command

# --- The bindings that shrink runs: edit these when gin names change. -------------------------

# gin/runs/demo.gin (./scripts/demo.sh and `python -m ptjax.main --gin_file=gin/runs/demo.gin`):
# its four rows in seconds. The model-tuning row has its own scoped steps and periods.
DEMO_SHRINK = [
    "--gin.TRAIN_STEPS_RELATIVE=2", "--gin.SAVING_PERIOD=2", "--gin.EVAL_PERIOD=2",
    "--gin.model_tuning/trainer.train.relative_steps=2",
    "--gin.model_tuning/trainer.train.eval_period=2",
    "--gin.model_tuning/utils.SaveCheckpointConfig.period=2",
    "--gin.MAX_EVAL_EXAMPLES=8", "--gin.BATCH_SIZE=4", "--gin.PROMPT_LENGTH=3",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 4}",
]
# A real-T5 command (the README's "Prompt tuning a real T5"), on the tiny T5 fixture, by
# the run gin it names (runs/<name>.gin): ptjax refuses a setting the run does not read.
_T5_DATA = ["--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.BATCH_SIZE=4"]
T5_SHRINK = {
    "prompt_tune": [*_T5_DATA, "--gin.TRAIN_STEPS=2", "--gin.PROMPT_LENGTH=4",
                    "--gin.SAVING_PERIOD=2", "--gin.EVAL_PERIOD=2"],
    "model_tune": [*_T5_DATA, "--gin.TRAIN_STEPS=2", "--gin.SAVING_PERIOD=2",
                   "--gin.EVAL_PERIOD=2"],
    "eval": [*_T5_DATA, "--gin.PROMPT_LENGTH=4"],
    "infer": [*_T5_DATA, "--gin.PROMPT_LENGTH=4"],
}
# `...` in a line after a training line: the training's macro bindings, except these (what
# only training reads: its steps and periods, and the prompt's initialisation).
ELLIPSIS_NOT_CARRIED = ("CLASS_LABELS", "PROMPT_INIT", "TRAIN_STEPS", "TRAIN_STEPS_RELATIVE",
                        "SAVING_PERIOD", "EVAL_PERIOD", "LEARNING_RATE", "TRAINABLE")
# Shell variables in documented commands (docs/coming_from_t5x.md's translated demo):
# name -> value here ({tmp}: the session tmp folder, {checkpoint}: the tiny T5X fixture).
SHELL_VARS = {"MODEL_DIR": "{tmp}/tmp/t5x_demo_model_dir",
              "PRETRAINED_MODEL": "{checkpoint}",
              "TFDS_DATA_DIR": "{tmp}/tfds"}
# The model gin that replaces a real T5 size, and how the vocabulary is made local.
TINY_MODEL_GIN = "t5_1_1_tiny.gin"
REAL_T5_MODEL = r"t5_1_1_(?:lm100k_)?(?:small|base|large|xl|xxl)\.gin"
VOCAB_BINDING = "VOCAB_PATH"      # used only if the README names no offline variable
VOCAB_FIXTURE = "t5_vocab/sentencepiece.model"
# ./scripts/pretrain_mini.sh SIZE [SPAN_STEPS] [LM_STEPS] [flags]: steps and flags.
PRETRAIN_STEPS = ["2", "2"]
PRETRAIN_SHRINK = [
    "--gin.BATCH_SIZE=4", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
    "--gin.MAX_EVAL_EXAMPLES=4", "--gin.SAVING_PERIOD=2", "--gin.EVAL_PERIOD=2",
]
# The shipped pre-trained mini T5 (INITIAL_CHECKPOINT_PATH=... of mini-model commands).
MINI_CHECKPOINT = "ptjax/assets/mini_t5_1_1_large"

# Background threads that run the expensive commands while the tests wait for them.
BACKGROUND_THREADS = 3
TIMEOUT_S = {"demo": 400, "t5": 240, "pretrain": 400, "reproduction": 600, "default": 180}

# Commands run a second time on the first run's outputs (test_documented_command_twice):
# rule name -> regex over the command (the demo: its plain form only, ~25 s a run).
TWICE_RULES = {"demo.sh": r"^\./scripts/demo\.sh$",
               "real T5": r"^(?!.*\$)(?=.*runs/(prompt|model)_tune\.gin)",   # training
               "experiments list/status/table": "", "experiments run": "",
               "experiments launch": "", "convert": "", "prompts.extract": ""}
# (test, rule, regex over the command) -> reason: xfail(strict=True) until fixed.
KNOWN_FAILURES = {}


# --- Session context --------------------------------------------------------------------------

class Context:
  """One tmp root for the session (re-rooted /tmp and /data paths, scratch clones, XLA
  cache), and the once-per-session jobs."""

  def __init__(self, tmp: str):
    self.tmp = tmp
    self.once = docs_rules.Once()
    self.cache_env = {"JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "xla_cache"),
                      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    self.stop = threading.Event()
    self._folder_locks: dict = {}
    self.timings: list = []
    self._locks_lock = threading.Lock()

  def folder_lock(self, folder: str) -> threading.RLock:
    with self._locks_lock:
      return self._folder_locks.setdefault(folder, threading.RLock())

  def reroot(self, text: str) -> str:
    """`/tmp/x`, `/data/x` (inside any token) -> `<tmp>/tmp/x`, `<tmp>/data/x`."""
    def sub(match):
      if match.string.startswith(self.tmp, match.start()):
        return match.group(0)   # Already ours.
      return f"{self.tmp}/{match.group(1)}"
    return re.sub(r"(?<![\w./~-])/(tmp|data)(?=/|\b)", sub, text)

  def scratch(self, name: str) -> str:
    return docs_rules.scratch_clone(os.path.join(self.tmp, "cwd", name))

  def run(self, argv, cwd, kind="default", env=None, stdin_path=None):
    # Every scripts/*.sh first runs `pip install -e .` (scripts/venv.sh) into the one .venv,
    # and two pip installs at once race: a script starts only when the one before it has
    # written its first stdout (venv.sh writes none) or ended.
    # `pip install --dry-run -e .` (the pip rule) prepares ptjax's metadata in the tree: it
    # holds the gate to its end.
    script = str(argv[0]).endswith(".sh") and "/scripts/" in str(argv[0])
    pip = list(map(str, argv[1:3])) == ["-m", "pip"]
    release = None
    if script or pip:
      PIP_GATE.acquire()
      release = PIP_GATE.release
    try:
      result = docs_rules.run(argv, cwd, env={**self.cache_env, **(env or {})},
                              timeout=TIMEOUT_S.get(kind, TIMEOUT_S["default"]),
                              stdin_path=stdin_path,
                              on_first_stdout=release if script else None)
    finally:
      if pip:
        release()
    self.timings.append((" ".join(map(str, argv))[:150], result.seconds))
    return result


PIP_GATE = threading.Lock()


def python_argv(tokens):
  """`python -m X ...` -> this interpreter; `pip ...` -> this interpreter's pip."""
  if tokens[0] in ("python", "python3"):
    return [sys.executable, *tokens[1:]]
  if tokens[0] in ("pip", "pip3"):
    return [sys.executable, "-m", "pip", *tokens[1:]]
  return list(tokens)


def check_shrink(name, flags):
  bad = docs_rules.unknown_bindings(flags)
  if bad:
    pytest.fail(f"{name}: no gin file of the repository mentions {bad} (renamed?): update "
                f"{name} at the top of tests/test_docs_commands.py")


def assert_ok(result, what=""):
  assert result.returncode == 0, f"{what}\n{result.describe()}"


def in_process(ctx, tokens, cwd):
  """`python -m MODULE ARGS` through runpy in this process (see docs_rules)."""
  assert tokens[:2] == ["python", "-m"], tokens
  return docs_rules.run_module_in_process(tokens[2], tokens[3:], cwd)


# --- ./scripts/test.sh ------------------------------------------------------------------------

def collect_job(cmd, ctx):
  args = shlex.split(cmd.text)[1:]
  return ctx.once(("test.sh", cmd.text), lambda: ctx.run(
      [os.path.join(ROOT, "scripts/test.sh"), *args, "--collect-only", "-q"], ROOT))


def collect_suite(cmd, ctx):
  result = collect_job(cmd, ctx)
  assert_ok(result)
  per_file = re.findall(r"^\S+\.py: (\d+)$", result.stdout, re.M)
  count = sum(map(int, per_file)) or len(re.findall(r"^\S+::\S+", result.stdout, re.M))
  assert count > 100, f"collected only {count} tests\n{result.describe()}"


# --- The demo ---------------------------------------------------------------------------------

DEMO_ROWS = ("majority class", "prompt design", "prompt tuning", "model tuning")


def demo_model_dir(ctx, args):
  """The demo's MODEL_DIR (/tmp/ptjax_demo, re-rooted: demo.sh's and demo.gin's default);
  a command with arguments (another task) gets its own: with one folder it would resume the
  first task's runs. A command that names its own MODEL_DIR uses it (re-rooted)."""
  for arg in args:
    named = re.match(r"""--gin\.MODEL_DIR=['"]?([^'"]+)['"]?$""", arg)
    if named:
      return ctx.reroot(named.group(1))
  slug = re.sub(r"[^\w]+", "_", " ".join(args)).strip("_")
  return ctx.reroot("/tmp/ptjax_demo") + (f"_{slug}" if slug else "")


def demo_job(cmd, ctx, run=1):
  tokens = shlex.split(cmd.text)
  direct = tokens[0] != "./scripts/demo.sh"
  args = tokens[3:] if direct else tokens[1:]
  model_dir = demo_model_dir(ctx, [a for a in args if "runs/demo.gin" not in a])
  check_shrink("DEMO_SHRINK", DEMO_SHRINK)

  def go():
    if direct:   # After the demo, in its MODEL_DIR (the default both share).
      demo_job(Command(cmd.file, cmd.line, "./scripts/demo.sh"), ctx)
    with ctx.folder_lock(model_dir):   # One run at a time in a MODEL_DIR.
      if direct:
        return ctx.run([*python_argv(tokens), *DEMO_SHRINK, f"--gin.MODEL_DIR='{model_dir}'"],
                       ctx.scratch("demo_main"), "demo")
      return ctx.run([os.path.join(ROOT, "scripts/demo.sh"), *[ctx.reroot(a) for a in args],
                      *DEMO_SHRINK], ROOT, "demo", env={"MODEL_DIR": model_dir})
  first = ctx.once(("demo", cmd.text, 1), go)
  if run == 1:
    return first, model_dir

  def again():
    ctx.once(("demo", cmd.text, 1), go)
    return go()
  return ctx.once(("demo", cmd.text, 2), again), model_dir


def check_demo_table(result, model_dir, args):
  assert_ok(result)
  rows = [l for l in result.stdout.splitlines() if l.startswith("| ")
          and not l.startswith("| method")]
  names = [r.split("|")[1].strip() for r in rows]
  assert len(rows) == 4 and all(n.startswith(e) for n, e in zip(names, DEMO_ROWS)), \
      f"expected the 4 rows {DEMO_ROWS}, got {names}\n{result.describe()}"
  for suffix in ("md", "json"):
    assert os.path.exists(os.path.join(model_dir, f"comparison.{suffix}")), suffix
  for arg in args:
    task = re.search(r"tasks/(mini_\w+)\.gin", arg)
    if task:
      assert f"pt_{task.group(1)}" in result.stdout, f"the table is not of pt_{task.group(1)}"


def demo(cmd, ctx):
  result, model_dir = demo_job(cmd, ctx)
  check_demo_table(result, model_dir, shlex.split(cmd.text))


def demo_twice(cmd, ctx):
  first, _ = demo_job(cmd, ctx)
  result, model_dir = demo_job(cmd, ctx, run=2)
  check_demo_table(result, model_dir, shlex.split(cmd.text))
  table = lambda r: [l for l in r.stdout.splitlines() if l.startswith("| ")]
  # Issue 15: run twice, the demo prints the same table (finished runs report their
  # results; rows equal to the first run's keep its wall times).
  assert table(result) == table(first), f"{table(first)}\n{table(result)}"


# --- Real T5 (train / eval on the tiny fixture) -----------------------------------------------

YES_NO = [("is the sky blue?", "yes"), ("is snow black?", "no"), ("is fire hot?", "yes"),
          ("is ice hot?", "no"), ("is grass green?", "yes"), ("is coal white?", "no")]


def offline_vocab_variable():
  """The README's offline vocabulary switch ("set `X` to a local copy"), or None."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    match = re.search(r"set\s+`(\w+)`\s+to\s+a\s+local\s+copy", f.read())
  return match.group(1) if match else None


def expand_shell_vars(cmd, token, ctx):
  def value(match):
    name = match.group(1) or match.group(2)
    if name not in SHELL_VARS:
      pytest.fail(f"{cmd.id}: shell variable ${name} has no value in SHELL_VARS: add one")
    return SHELL_VARS[name].format(tmp=ctx.tmp, checkpoint=shared_fixture(INLINE_CKPT))
  return re.sub(r"\$\{(\w+)\}|\$([A-Z_][A-Z0-9_]*)", value, token)


def write_task_module(cwd, module, task, labels):
  """A stand-in for the user's task module the command imports (MIXTURE_OR_TASK_MODULE):
  registers `task` from train.tsv / dev.tsv in its cwd, as the docs show
  (`text_tasks.text_task(name, files, vocabularies.t5_vocabulary())`)."""
  write_rows(cwd, "train.tsv", labels)
  write_rows(cwd, "dev.tsv", labels)
  write_file(os.path.join(cwd, f"{module}.py"),
             "import os\nfrom ptjax.data import text_tasks, vocabularies\n"
             "here = os.path.dirname(os.path.abspath(__file__))\n"
             f"text_tasks.text_task({task!r}, {{'train': os.path.join(here, 'train.tsv'), "
             f"'validation': os.path.join(here, 'dev.tsv')}}, vocabularies.t5_vocabulary())\n")


def write_file(path, text):
  """Atomically, and not at all when it already holds `text` (a run may be reading it)."""
  if os.path.exists(path) and open(path).read() == text:
    return
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def write_rows(cwd, name, labels=("yes", "no")):
  """A small two-label task: the command's own labels when it names them."""
  rows = [(i, labels[0] if t == "yes" else labels[1]) for i, t in YES_NO]
  rows = rows * (4 if "train" in name else 1)
  if name.endswith(".tsv"):
    text = "inputs\ttargets\n" + "".join(f"{i}\t{t}\n" for i, t in rows)
  else:
    text = "".join(json.dumps({"inputs": i, "targets": t}) + "\n" for i, t in rows)
  write_file(os.path.join(cwd, name), text)


def t5_tokens(cmd, ctx, cwd):
  """The command with the tiny model, the fixture checkpoint and vocabulary, its TSV files
  written into cwd, /tmp re-rooted and T5_SHRINK appended."""
  tokens = docs_rules.fill_ellipsis(cmd, ELLIPSIS_NOT_CARRIED)
  out = []
  for token in tokens:
    token = ctx.reroot(expand_shell_vars(cmd, token, ctx))
    if token.startswith("--gin_file="):
      token = re.sub(REAL_T5_MODEL + "$", TINY_MODEL_GIN, token)
    out.append(token)
  labels = gin_value(out, "CLASS_LABELS")
  labels = tuple(ast.literal_eval(labels)) if labels else ("yes", "no")
  for token in out:   # Relative data files named by the command: a small two-label task.
    for name in re.findall(r"'([\w./-]+\.(?:tsv|jsonl))'", token):
      if not os.path.isabs(name):
        write_rows(cwd, name, labels)
  module = (gin_value(out, "MIXTURE_OR_TASK_MODULE") or "").strip("'\"")
  if module:
    write_task_module(cwd, module, gin_value(out, "MIXTURE_OR_TASK_NAME").strip("'\""), labels)
  run = re.search(r"runs/(\w+)\.gin", " ".join(out))
  run = run.group(1) if run else None
  if run not in T5_SHRINK:
    pytest.fail(f"{cmd.id}: no T5_SHRINK entry for runs/{run}.gin: add one")
  vocab = shared_fixture(VOCAB_FIXTURE)
  variable = offline_vocab_variable()
  extra = [f"--gin.INITIAL_CHECKPOINT_PATH='{shared_fixture(INLINE_CKPT)}'",
           *([] if variable else [f"--gin.{VOCAB_BINDING}='{vocab}'"]), *T5_SHRINK[run]]
  check_shrink("T5_SHRINK", extra[1:])
  return python_argv(out) + extra, ({variable: vocab} if variable else {})


def gin_value(tokens, name):
  """The last `--gin.NAME=` value among tokens (gin: the last binding wins), or None."""
  value = None
  for token in tokens:
    if token.startswith(f"--gin.{name}="):
      value = token.split("=", 1)[1]
  return value


def t5_job(cmd, ctx, run=1):
  """{"result", "started" (time), "prompt_before" (run 2: prompt.npy after run 1)}, argv."""
  cwd = ctx.scratch(f"t5_{cmd.file.replace('/', '_')}_{cmd.block}")
  argv, env = t5_tokens(cmd, ctx, cwd)
  previous = cmd.previous
  prompt = os.path.join((gin_value(argv, "MODEL_DIR") or "").strip("'\""), "prompt.npy")

  def go():
    if previous is not None and match_rule(previous) is RULE_BY_NAME["real T5"]:
      t5_job(previous, ctx)   # What this command reads (the training before the eval).
    before = np.load(prompt) if run == 2 and os.path.exists(prompt) else None
    started = time.time()
    return {"result": ctx.run(argv, cwd, "t5", env=env), "started": started,
            "prompt_before": before}
  if run == 1:
    return ctx.once(("t5", cmd.id, 1), go), argv

  def again():
    ctx.once(("t5", cmd.id, 1), go)
    return go()
  return ctx.once(("t5", cmd.id, 2), again), argv


def real_t5(cmd, ctx, run=1):
  job, argv = t5_job(cmd, ctx, run)
  result = job["result"]
  assert_ok(result)
  model_dir = (gin_value(argv, "MODEL_DIR") or "").strip("'\"")
  kind = re.search(r"runs/(\w+)\.gin", cmd.text)
  kind = kind.group(1) if kind else "?"
  metrics = [p for p in glob.glob(os.path.join(model_dir, "eval", "*", "step_*.metrics.json"))
             if os.path.getmtime(p) >= job["started"] - 1]
  if kind in ("prompt_tune", "model_tune"):
    if kind == "prompt_tune":
      prompt = np.load(os.path.join(model_dir, "prompt.npy"))
      length = gin_value(argv, "PROMPT_LENGTH")
      assert length is None or prompt.shape[0] == int(length), prompt.shape
      assert os.path.isdir(os.path.join(model_dir, "peft_adapter"))
      if run == 2:   # The finished run is not trained again.
        np.testing.assert_array_equal(prompt, job["prompt_before"])
    if run == 1:
      assert metrics, f"no eval/<task>/step_<n>.metrics.json in {model_dir}"
  elif kind == "eval":
    prompt_file = (gin_value(argv, "PROMPT_FILE") or "").strip("'\"")
    assert not prompt_file or os.path.exists(prompt_file), \
        f"PROMPT_FILE {prompt_file} does not exist: the training command did not write it"
    assert metrics, f"the eval wrote no eval/<task>/step_<n>.metrics.json in {model_dir}"
    assert "loss" in json.load(open(metrics[0]))
  else:
    pytest.fail(f"real-T5 rule: no assertions for runs/{kind}.gin yet: add them")


def real_t5_twice(cmd, ctx):
  real_t5(cmd, ctx, run=2)


# --- A released prompt, evaluated and inferred (docs/coming_from_t5x.md) --------------------

# The released base prompts are 768 wide: a model of that width (small otherwise, tied output
# layer), saved as a T5X checkpoint at the LM-adapted step.
RELEASED_PROMPT = "pretrained_prompts/t5_1_1_lm100k_base/sst2.npy"
RELEASED_WIDTH = ["--gin.config.T5Config.emb_dim=768", "--gin.config.T5Config.num_heads=2",
                  "--gin.config.T5Config.head_dim=8", "--gin.config.T5Config.mlp_dim=16",
                  "--gin.config.T5Config.num_encoder_layers=1",
                  "--gin.config.T5Config.num_decoder_layers=1",
                  "--gin.config.T5Config.logits_via_embedding=True"]
RELEASED_SHRINK = {"{'inputs': 512, 'targets': 8}": "{'inputs': 24, 'targets': 4}",
                   'batch_size=128': 'batch_size=4'}
MOCK_EXAMPLES = 8
# `python -m ptjax.main ARGS` inside TFDS mock data (a subprocess: absl flags are global).
MOCK_TFDS_MAIN = ("import sys, tensorflow_datasets as tfds\n"
                  "from ptjax import main\n"
                  f"with tfds.testing.mock_data(num_examples={MOCK_EXAMPLES}):\n"
                  "  sys.argv = ['ptjax.main'] + sys.argv[1:]\n"
                  "  main.run()\n")


def released_prompt_model(ctx):
  def build():
    import jax

    from ptjax.checkpoints import save_t5x
    from ptjax.model import T5Config, init_params
    config = T5Config(vocab_size=32128, emb_dim=768, num_heads=2, head_dim=8, mlp_dim=16,
                      num_encoder_layers=1, num_decoder_layers=1,
                      mlp_activations=("gelu", "linear"), logits_via_embedding=True)
    path = os.path.join(ctx.tmp, "released_prompt_model", "checkpoint_1100000")
    if not os.path.exists(os.path.join(path, "checkpoint")):
      save_t5x(init_params(config, jax.random.PRNGKey(0)), path, step=1_100_000)
    return path
  return ctx.once(("released prompt model",), build)


def released_prompt(cmd, ctx):
  tokens = shlex.split(cmd.text)
  for old, new in RELEASED_SHRINK.items():
    assert any(old in t for t in tokens), f"{cmd.id}: {old} not in the command"
    tokens = [t.replace(old, new) for t in tokens]
  eval_dir = os.path.join(ctx.tmp, "released_prompt_eval")
  values = {"PRETRAINED_MODEL": released_prompt_model(ctx), "EVAL_DIR": eval_dir,
            "PROMPT_FILE": shared_fixture(RELEASED_PROMPT),
            "TFDS_DATA_DIR": os.path.join(ctx.tmp, "tfds")}
  tokens = [re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], t) for t in tokens]
  tokens = [re.sub(REAL_T5_MODEL + "$", TINY_MODEL_GIN, t) if t.startswith("--gin_file=")
            else t for t in tokens]
  assert tokens[:3] == ["python", "-m", "ptjax.main"], tokens[:3]
  kind = re.search(r"runs/(\w+)\.gin", cmd.text).group(1)
  argv = [sys.executable, "-c", MOCK_TFDS_MAIN, *tokens[3:], *RELEASED_WIDTH]
  result = ctx.once(("released prompt", cmd.id), lambda: ctx.run(
      argv, ctx.scratch("released_prompt"), "t5",
      env={"PTJAX_T5_VOCAB": shared_fixture(VOCAB_FIXTURE)}))
  assert_ok(result)
  assert "'prompt_tuning.data.glue' is not installed" in result.stdout, result.describe()
  folder = os.path.join(eval_dir, kind, "pt_glue_sst2_v002_taskless")
  [rows_file] = glob.glob(os.path.join(folder, "step_*.jsonl"))
  rows = [json.loads(l) for l in open(rows_file)]
  assert len(rows) == MOCK_EXAMPLES, result.describe()
  if kind == "eval":
    [metrics] = glob.glob(os.path.join(folder, "step_*.metrics.json"))
    assert {"accuracy", "loss"} <= set(json.load(open(metrics)))
  else:   # Predictions only: no targets, no metrics.
    assert all(set(r) == {"input", "prediction", "score"} for r in rows), rows[0]
    assert not glob.glob(os.path.join(folder, "*.metrics.json"))


# --- Mini-model serving and neighbours (on the demo's prompt) ---------------------------------

def mini_placeholders(cmd, ctx, tokens, model_dir):
  """`--gin.INITIAL_CHECKPOINT_PATH=...` -> the shipped mini T5; `--gin.MODEL_DIR=...` -> a
  tmp folder; `RUN` -> the demo's prompt-tuning run (/tmp/ptjax_demo/prompt_tuning)."""
  demo_cmd = Command("README.md", 0, "./scripts/demo.sh")
  _, demo_dir = demo_job(demo_cmd, ctx)
  run = os.path.join(demo_dir, "prompt_tuning")
  out = []
  for token in tokens:
    token = ctx.reroot(token)
    if token == "--gin.INITIAL_CHECKPOINT_PATH=...":
      token = f"--gin.INITIAL_CHECKPOINT_PATH='{MINI_CHECKPOINT}'"
    elif token == "--gin.MODEL_DIR=...":
      token = f"--gin.MODEL_DIR='{model_dir}'"
    token = re.sub(r"\bRUN\b", repr(run), token)
    out.append(token)
  return out, run


def mini_job(cmd, ctx):
  cwd = ctx.scratch("mini")
  tokens = shlex.split(cmd.text)
  stdin = None
  if "<" in tokens:
    i = tokens.index("<")
    stdin, tokens = tokens[i + 1], tokens[:i]
  model_dir = os.path.join(ctx.tmp, "neighbours")
  tokens, run = mini_placeholders(cmd, ctx, tokens, model_dir)
  if stdin:   # Two requests for the first task the command names a prompt for.
    task = re.findall(r"'(\w+)':", gin_value(tokens, "TASK_PROMPTS") or "'rte':")[0]
    write_file(os.path.join(cwd, stdin), "".join(
        json.dumps({"task": task, "inputs": text}) + "\n"
        for text in ("Ana Bel lives in Orvik. Claim: Ana Bel lives in Orvik.",
                     "Ana Bel works at Kestrel. Claim: Ana Bel lives in Dunmore.")))
  result = ctx.once(("mini", cmd.text), lambda: ctx.run(
      python_argv(tokens), cwd, env=None,
      stdin_path=os.path.join(cwd, stdin) if stdin else None))
  return result, model_dir, run


def serve(cmd, ctx):
  result, _, run = mini_job(cmd, ctx)
  assert os.path.isdir(run), f"the demo wrote no prompt-tuning run at {run}"
  assert_ok(result)
  answers = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
  assert len(answers) == 2 and all({"prediction", "score"} <= set(a) for a in answers), \
      result.describe()


def neighbours(cmd, ctx):
  result, model_dir, _ = mini_job(cmd, ctx)
  assert_ok(result)
  text = open(os.path.join(model_dir, "neighbours.txt")).read()
  names = re.findall(r"'(\w+)':", gin_value(shlex.split(cmd.text), "PROMPT_FILES") or "")
  assert names and all(name in text for name in names), (names, text[:2000])
  assert os.path.exists(os.path.join(model_dir, "neighbours.json"))


# --- Bare module names ------------------------------------------------------------------------

def bare_module(cmd, ctx):
  tokens = shlex.split(cmd.text)
  if tokens[2] == "ptjax.main":   # absl flags are process-global: a subprocess.
    result = ctx.once(("help", cmd.text), lambda: ctx.run(
        [*python_argv(tokens), "--help"], ctx.scratch("help")))
    assert result.returncode == 1, result.describe()   # absl's --help exits 1.
    assert "--gin_file" in result.stdout, result.describe()
  else:
    result = ctx.once(("help", cmd.text), lambda: in_process(ctx, [*tokens, "--help"],
                                                             ctx.scratch("help")))
    assert_ok(result)
    assert "usage:" in result.stdout.lower(), result.describe()
  assert "Traceback" not in result.output


# --- python -m ptjax.experiments --------------------------------------------------------------

def experiments_default_root():
  """The CLI's --root default (read from its parser; the module is then dropped from
  sys.modules again, so that runpy runs it as __main__ without a warning)."""
  had = "ptjax.experiments.__main__" in sys.modules
  from ptjax.experiments import __main__ as experiments_cli
  root = experiments_cli._parser().get_default("root")
  if not had:
    sys.modules.pop("ptjax.experiments.__main__", None)
  return root


def experiments_tokens(cmd, ctx, tokens=None):
  """--root (given or the CLI's default) re-rooted under tmp; `GRID` -> all; `=...` values
  -> stand-in values."""
  tokens = list(tokens or shlex.split(cmd.text))
  default_root = experiments_default_root()
  out = []
  for token in tokens:
    if token == "GRID":
      token = "all"
    elif re.fullmatch(r"--\w+=\.\.\.", token):
      token = token[:-3] + f"stand-in-{token[2:-4]}"
    elif token.startswith("--root=") and tokens[3:4] != ["launch"]:
      root = token.split("=", 1)[1]
      token = "--root=" + (ctx.reroot(root) if root.startswith("/")
                           else os.path.join(ctx.tmp, re.sub(r"^(\w+)://", r"\1/", root)))
    out.append(token)
  if tokens[3] != "launch" and not any(t.startswith("--root=") for t in out):
    out.append("--root=" + ctx.reroot(default_root))
  return out


def experiments_cwd(cmd, ctx):
  return ctx.scratch(f"experiments_{cmd.file.replace('/', '_')}_{cmd.block}")


def experiments_job(cmd, ctx, tokens=None, run=1, key=None):
  tokens = experiments_tokens(cmd, ctx, tokens)
  cwd = experiments_cwd(cmd, ctx)
  key = key or cmd.text
  first = ctx.once(("experiments", key, 1), lambda: in_process(ctx, tokens, cwd))
  if run == 1:
    return first, tokens, cwd
  return ctx.once(("experiments", key, 2), lambda: in_process(ctx, tokens, cwd)), tokens, cwd


def grids():
  from ptjax.experiments import grids as grid_module
  return list(grid_module.GRIDS)


def experiments_read(cmd, ctx, run=1):
  result, tokens, cwd = experiments_job(cmd, ctx, run=run)
  assert_ok(result)
  command, grid = tokens[3], (tokens[4] if len(tokens) > 4 and not
                              tokens[4].startswith("-") else None)
  names = grids() if grid in (None, "all") else [grid]
  text = result.stdout
  if command == "list" and grid is None:
    for name in names:
      assert re.search(rf"^{name}: \d+ cells, \d+ runs", text, re.M), f"{name}\n{text}"
  elif command == "list":
    for name in names:
      assert re.search(rf"^# {name}: \d+ cells \(\w+\)", text, re.M), f"{name}\n{text}"
    assert re.search(r"^python -m ptjax\.main ", text, re.M), text
  elif command == "status":
    for name in names:
      assert re.search(rf"^{name}: 0 done, 0 started, (\d+) pending of \1$", text, re.M), text
  elif command == "table":   # An empty root: one line per grid, exit 0, nothing written.
    for name in names:
      assert re.search(rf"^{name}: no finished cells under ", text, re.M), text
    out = [t.split("=", 1)[1] for t in tokens if t.startswith("--out=")]
    if out:
      folder = os.path.join(cwd, out[0])
      assert not os.path.exists(folder) or not os.listdir(folder), os.listdir(folder)


def experiments_read_twice(cmd, ctx):
  experiments_read(cmd, ctx, run=2)


def launch_inner_command(ctx, script_cmd_owner):
  """The `python -m ptjax.experiments run ...` inside the TPU launch command before it."""
  result, calls = launch_job(script_cmd_owner, ctx)
  remote = [c for c in calls if c[0] == "gcloud"][0]
  command = remote[remote.index("--command") + 1]
  part = [p.strip() for p in command.split("&&") if "ptjax.experiments run" in p][0]
  return shlex.split(part.replace("nohup ", "").split(">")[0])


def experiments_run(cmd, ctx, run=1):
  tokens = shlex.split(cmd.text)
  note = ""
  if "..." in tokens:   # Prose: the command inside the launch script of the TPU launch.
    owner = [c for c in docs_rules.extract(cmd.file) if c.line < cmd.line
             and re.match(r"python -m ptjax\.experiments launch .*--target=tpu", c.text)]
    assert owner, f"{cmd.id}: `run ...` with no TPU launch command before it to fill `...`"
    tokens = launch_inner_command(ctx, owner[-1])
    note = f" (filled from {owner[-1].id})"
  if "--dry_run" not in tokens:
    tokens.append("--dry_run")
  result, tokens, _ = experiments_job(cmd, ctx, tokens, run=run)
  assert_ok(result, note)
  headers = re.findall(r"^# (\w+): (\d+) cells \((\w+)\), (\d+) to run$", result.stdout, re.M)
  grid = tokens[4]
  expected = grids() if grid == "all" else [grid]
  assert [h[0] for h in headers] == expected, result.describe()
  for name, cells, family, to_run in headers:
    assert int(cells) > 0 and int(to_run) == int(cells), (name, cells, to_run)
  assert re.search(r"^python -m ptjax\.main ", result.stdout, re.M)


def experiments_run_twice(cmd, ctx):
  experiments_run(cmd, ctx, run=2)


def launch_job(cmd, ctx, run=1):
  """`launch` in the block's scratch cwd, then the script it wrote, with stand-ins for
  gcloud / ssh / scp on PATH that record their argv."""
  result, tokens, cwd = experiments_job(cmd, ctx, run=run)
  if result.returncode != 0:
    return result, []
  script = re.search(r"^wrote (\S+)$", result.stdout, re.M).group(1)
  return result, run_launch_script(ctx, os.path.join(cwd, script), f"{cmd.id}_{run}")


def run_launch_script(ctx, path, name):
  folder = os.path.join(ctx.tmp, "stand_ins", name.replace("/", "_").replace(":", "_"))
  bin_dir, log = docs_rules.stand_ins(folder)
  if os.path.exists(log):
    os.remove(log)
  # The script's own defaults: TPU, ZONE, PROJECT and HOST unset.
  result = docs_rules.run([path], os.path.dirname(path), timeout=60,
                          env={"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
                          unset=("TPU", "ZONE", "PROJECT", "HOST"))
  assert_ok(result, f"the launch script {path}")
  return docs_rules.recorded_calls(log)


def documented_install(extra):
  """The docs' `pip install ...` line for `jax[<extra>]` (docs/experiments.md), or None."""
  lines = [c.text for c in COMMANDS if c.text.startswith("pip install") and
           f"jax[{extra}" in c.text]
  return lines[0] if lines else None


def check_launch_calls(calls, tokens, ctx):
  """One call on every worker (TPU) / the host (GPU) that installs what the docs' install
  line says and runs the grid with the launch command's options."""
  grid = tokens[4]
  options = {t.split("=", 1)[0]: t.split("=", 1)[1] for t in tokens[5:] if "=" in t}
  target = options.get("--target", "tpu")
  if target == "tpu":
    assert len(calls) == 1 and calls[0][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], \
        calls
    call = calls[0]
    assert options.get("--host", call[5]) == call[5], call   # The TPU's name.
    assert "--worker=all" in call, call                       # Every worker.
    for flag in ("--zone", "--project"):
      if flag in options:
        assert call[call.index(flag) + 1] == options[flag], call
    remote = call[call.index("--command") + 1]
    assert (documented_install("tpu") or "pip install") in remote, remote
    assert "--flags=--initialize_distributed" in remote, remote
  else:
    assert len(calls) == 1 and calls[0][0] == "ssh", calls
    call = calls[0]
    assert call[1] == options.get("--host"), call
    remote = call[2]
    assert (documented_install("cuda") or "pip install") in remote, remote
    assert "nohup " in remote, remote
  run = [p for p in re.split(r"&&|nohup", remote) if "ptjax.experiments run" in p][0]
  run_tokens = shlex.split(run.split(">")[0])
  assert run_tokens[:5] == ["python", "-m", "ptjax.experiments", "run", grid], run_tokens
  for flag in ("--sizes", "--root", "--tasks", "--seeds"):
    if flag in options:
      assert f"{flag}={options[flag]}" in run_tokens, (flag, run_tokens)
  return run_tokens


def launch(cmd, ctx, run=1):
  result, calls = launch_job(cmd, ctx, run)
  assert_ok(result)
  tokens = experiments_tokens(cmd, ctx)
  run_tokens = check_launch_calls(calls, tokens, ctx)
  # The command inside the script is a valid run (dry, root re-rooted).
  inner, _, _ = experiments_job(cmd, ctx, run_tokens + ["--dry_run"], key=f"inner {cmd.text}")
  assert_ok(inner, "the run command inside the launch script")
  assert re.search(r"^# \w+: \d+ cells", inner.stdout, re.M), inner.describe()


def launch_twice(cmd, ctx):
  launch(cmd, ctx, run=2)


def launch_script(cmd, ctx):
  owner = cmd.previous
  name = shlex.split(cmd.text)[0]
  assert owner is not None and owner.text.startswith("python -m ptjax.experiments launch"), \
      f"{cmd.id}: {name} needs the launch command that writes it before it in its block"
  result, _ = launch_job(owner, ctx)
  assert_ok(result)
  path = os.path.join(experiments_cwd(owner, ctx), name)
  assert os.path.exists(path), f"the launch command wrote no {name}"
  calls = run_launch_script(ctx, path, cmd.id)
  check_launch_calls(calls, experiments_tokens(owner, ctx), ctx)


# --- pip --------------------------------------------------------------------------------------

def pip_install(cmd, ctx):
  tokens = shlex.split(cmd.text)
  assert tokens[:2] == ["pip", "install"], tokens
  argv = [*python_argv(tokens[:2]), "--dry-run", "--no-deps", "--no-index",
          "--no-build-isolation", *tokens[2:]]
  result = ctx.once(("pip", cmd.text), lambda: ctx.run(argv, ROOT))
  assert_ok(result)
  for requirement in tokens[2:]:
    if requirement.startswith("-") or requirement == ".":
      continue
    assert re.search(rf"Requirement already satisfied: {re.escape(requirement)}",
                     result.stdout), result.describe()
    assert "does not provide the extra" not in result.output, result.describe()
  if "." in tokens:
    assert "Would install ptjax" in result.stdout, result.describe()


# --- show_tasks, convert ----------------------------------------------------------------------

def show_tasks(cmd, ctx):
  tokens = shlex.split(cmd.text)
  result = ctx.once(("show_tasks", cmd.text), lambda: in_process(ctx, tokens,
                                                                 ctx.scratch("show")))
  assert_ok(result)
  if "--list" in tokens:
    for name in ("pt_super_glue_rte_v102", "pt_super_glue_rte_v102_taskless", "pt_mini_rte"):
      assert re.search(rf"\b{name}\b", result.stdout), name


def convert_argvs(cmd, ctx):
  """The synopsis `--input PATH --output DIR --format {t5x,hf} [--config NAME|JSON]
  [--dtype]`, once per format: T5X fixture -> HF (--config tiny), then that HF folder ->
  T5X; optional `[--dtype]` left out."""
  text = re.sub(r"\[--config [^\]]*\]", "--config tiny", cmd.text)
  text = re.sub(r"\s*\[[^\]]*\]", "", text)
  tokens = shlex.split(text)
  formats = re.search(r"\{([\w,]+)\}", text).group(1).split(",")
  folder = os.path.join(ctx.tmp, "convert")
  sources = {"hf": shared_fixture(INLINE_CKPT), "t5x": os.path.join(folder, "hf")}
  argvs = []
  for fmt in sorted(formats):   # hf first: the t5x conversion reads its output.
    argv = []
    for token in tokens:
      token = {"PATH": sources[fmt], "DIR": os.path.join(folder, fmt)}.get(token, token)
      argv.append(fmt if token.startswith("{") else token)
    if fmt == "t5x":
      argv = [t for i, t in enumerate(argv) if t != "--config" and argv[i - 1] != "--config"]
    argvs.append(argv)
  return argvs, folder


def convert(cmd, ctx, run=1):
  argvs, folder = convert_argvs(cmd, ctx)

  def go():
    return [in_process(ctx, argv, ROOT) for argv in argvs]
  results = ctx.once(("convert", 1), go)
  if run == 2:
    results = ctx.once(("convert", 2), go)
  for result in results:
    assert_ok(result)
  assert os.path.exists(os.path.join(folder, "hf", "config.json"))
  assert os.listdir(os.path.join(folder, "t5x"))


def convert_twice(cmd, ctx):
  convert(cmd, ctx, run=2)


# --- prompts.extract --------------------------------------------------------------------------

EXTRACT_STEP = 1_100_010


def official_prompt_run(model_dir):
  """A stand-in google-research/prompt-tuning MODEL_DIR at `model_dir`, laid out as the
  official code writes it: T5X checkpoint_<EXTRACT_STEP> = the tiny T5X fixture +
  target/encoder/prompt/prompt/prompt, the same prompt in numpy_checkpoints/checkpoint_<step>/
  encoder.prompt.prompt.prompt (np.save, no extension), config.gin naming the fixture as
  INITIAL_CHECKPOINT_PATH. Returns the prompt."""
  from ptjax.checkpoints import read_t5x, save_t5x
  frozen = shared_fixture(INLINE_CKPT)
  prompt = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 8)).astype(np.float32)
  params = read_t5x(frozen)
  params["encoder"]["prompt"] = {"prompt": {"prompt": prompt}}
  save_t5x(params, os.path.join(model_dir, f"checkpoint_{EXTRACT_STEP}"), step=EXTRACT_STEP)
  numpy_dir = os.path.join(model_dir, "numpy_checkpoints", f"checkpoint_{EXTRACT_STEP}")
  os.makedirs(numpy_dir, exist_ok=True)
  with open(os.path.join(numpy_dir, "encoder.prompt.prompt.prompt"), "wb") as f:
    np.save(f, prompt)
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(f"INITIAL_CHECKPOINT_PATH = {frozen!r}\n")
  return prompt


def prompt_extract(cmd, ctx, run=1):
  tokens = [ctx.reroot(t) for t in shlex.split(cmd.text)]
  source, output = (tokens[tokens.index(flag) + 1] for flag in ("--input", "--output"))
  prompt = ctx.once(("official prompt run", source), lambda: official_prompt_run(source))
  go = lambda: in_process(ctx, tokens, ROOT)
  result = ctx.once(("extract", cmd.text, 1), go)
  if run == 2:
    result = ctx.once(("extract", cmd.text, 2), go)
  assert_ok(result)
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["step"] == EXTRACT_STEP and summary["written"] == (run == 1), result.describe()
  from ptjax import prompts
  np.testing.assert_array_equal(prompts.load_prompt(output), prompt)
  if not output.endswith(".npy"):
    with open(os.path.join(output, "adapter_config.json")) as f:
      config = json.load(f)
    assert config["base_model_name_or_path"] == shared_fixture(INLINE_CKPT), config


def prompt_extract_twice(cmd, ctx):
  prompt_extract(cmd, ctx, run=2)


# --- Pre-training and the miniature reproduction ----------------------------------------------

def pretrain(cmd, ctx):
  tokens = shlex.split(cmd.text)
  size = "large" if len(tokens) < 2 or tokens[1] == "SIZE" else tokens[1]
  flags = [t for t in tokens[4:]]
  out = ctx.reroot(f"/tmp/ptjax_pretrain/mini_{size}")
  check_shrink("PRETRAIN_SHRINK", PRETRAIN_SHRINK)
  argv = [os.path.join(ROOT, "scripts/pretrain_mini.sh"), size, *PRETRAIN_STEPS, *flags,
          *PRETRAIN_SHRINK]
  result = ctx.once(("pretrain", size), lambda: ctx.run(argv, ROOT, "pretrain",
                                                        env={"OUT": out}))
  assert_ok(result)
  done = re.search(r"^pre-trained mini_\w+ in \d+ s: (\S+)$", result.stdout, re.M)
  assert done, result.describe()
  checkpoint = done.group(1)
  assert re.search(r"checkpoint_\d+$", checkpoint), checkpoint
  assert os.path.exists(os.path.join(checkpoint, "checkpoint")), \
      f"no T5X checkpoint at {checkpoint}\n{result.describe()}"
  curve = open(os.path.join(out, "curve.tsv")).read().splitlines()
  assert len(curve) >= 2, curve


def reproduction_job(cmd, ctx):
  tokens = shlex.split(cmd.text)
  args = tokens[1:]   # [SEEDS] [FLAGS] as documented; --dry_run is added.
  env = {"ROOT": ctx.reroot("/tmp/ptjax_mini_experiments"),
         "PTJAX_PRETRAIN_ROOT": ctx.reroot("/tmp/ptjax_pretrain_reproduction")}
  before = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(ROOT, "docs/results/**"),
                                                       recursive=True)}
  result = ctx.once(("reproduction", cmd.text), lambda: ctx.run(
      [os.path.join(ROOT, tokens[0]), *args, "--dry_run"], ROOT, "reproduction", env=env))
  return result, before


def reproduction(cmd, ctx):
  result, before = reproduction_job(cmd, ctx)
  assert_ok(result)
  text = result.stdout
  for size in ("small", "base", "large"):   # Missing pre-training is named, not run.
    assert re.search(rf"pretrain_mini\.sh {size}\b", text), f"{size}\n{result.describe()}"
  planned = set(re.findall(r"^# (\w+): \d+ cells \(mini\), \d+ to run$", text, re.M))
  assert planned == set(grids()), planned
  after = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(ROOT, "docs/results/**"),
                                                      recursive=True)}
  assert after == before, "a dry run changed docs/results"


def reproduction_seeds(cmd, ctx):
  """Figure 1's largest size and Figure 3b again over seeds 0-2 (docs/results/README.md)."""
  result, _ = reproduction_job(cmd, ctx)
  assert_ok(result)
  for grid in ("fig1_scale", "fig3b_init"):
    assert re.search(rf"/{grid}/size=large/\S*seed_2'", result.stdout), \
        f"no seed_2 run of {grid} planned"


# --- python -m ptjax.plan ---------------------------------------------------------------------

# What makes a documented plan run in seconds: any --model -> PLAN_MODEL (the mesh is kept:
# simulated devices cost little); --table -> its own sizes / slices replaced by these.
PLAN_MODEL = "tiny"
PLAN_TABLE_SHRINK = ["--sizes", "tiny", "--slices", "1xh200", "--inputs", "64"]


def plan_command(cmd, ctx):
  tokens = shlex.split(cmd.text)
  table = "--table" in tokens
  args, drop = [], False
  for token in tokens[3:]:
    if drop:
      drop = False
      continue
    name = token.split("=", 1)[0]
    if name == "--model":
      args += ["--model", PLAN_MODEL]
      drop = "=" not in token
    elif table and name in ("--sizes", "--slices"):
      drop = "=" not in token
    else:
      args.append(token)
  args += PLAN_TABLE_SHRINK if table else []
  # A subprocess: the simulated device count is fixed when JAX starts.
  result = ctx.once(("plan", tuple(args)), lambda: ctx.run(
      [sys.executable, "-m", "ptjax.plan", *args], ctx.scratch("plan")))
  assert_ok(result)
  out = result.stdout
  if table:
    assert re.search(r"^<!-- python -m ptjax\.plan --table .*; jax [\d.]+; \d{4}-\d\d-\d\d;",
                     out, re.M), result.describe()
    for mode in ("prompt_tuning", "model_tuning"):
      assert re.search(rf"^\| tiny \| {mode} \| 1xh200 \| 1x1\b.*\| 141 \|$", out, re.M), \
          f"{mode}\n{result.describe()}"
  elif "--json" in tokens:
    summary = json.loads(out)
    assert summary["config"]["model"] == PLAN_MODEL and summary["train"]["argument_bytes"] > 0
    assert isinstance(summary["fits"], bool), summary
  else:
    assert re.search(r"^\S+: .* per device, .*: (fits|does not fit) \(", out, re.M), \
        result.describe()
    assert "Temporaries are estimated by XLA's CPU backend" in out, result.describe()


# --- The rule table ---------------------------------------------------------------------------

class Rule:
  """(regex, transform, note), plus: `twice` (the second-run check), `extra` (a further
  check), and for expensive rules `background(cmd, ctx, run)`: the runs alone, no asserts,
  started early in a background thread (run 1 or 2)."""

  def __init__(self, name, pattern, transform, note, twice=None, extra=None, background=None):
    self.name, self.pattern, self.transform, self.note = name, re.compile(pattern), transform, note
    self.twice, self.extra, self.background = twice, extra, background


RULES = [
    Rule("test.sh", r"^\./scripts/test\.sh( |$)", collect_suite,
         "`./scripts/test.sh [ARGS]` -> `./scripts/test.sh [ARGS] --collect-only -q` (running the "
         "suite inside itself would recurse); collects > 100 tests.",
         background=lambda c, x, run: collect_job(c, x)),
    Rule("demo.sh", r"^\./scripts/demo\.sh( |$)", demo,
         "`./scripts/demo.sh [ARGS]` -> the same with ARGS + DEMO_SHRINK, "
         "MODEL_DIR=/tmp/ptjax_demo re-rooted (a command with ARGS, e.g. another task, gets "
         "its own folder: with one, it would resume the first task's runs); prints the "
         "comparison table with its 4 rows "
         "(majority class, prompt design, prompt tuning, model tuning) of the gin's task and "
         "writes comparison.{md,json}. Twice (the plain `./scripts/demo.sh`): a second run "
         "in the same MODEL_DIR exits 0 with the table.",
         twice=demo_twice, background=lambda c, x, run: demo_job(c, x, run)),
    Rule("demo.gin", r"^python -m ptjax\.main --gin_file=\S*runs/demo\.gin( |$)", demo,
         "`python -m ptjax.main --gin_file=gin/runs/demo.gin [ARGS]` (what demo.sh runs, without "
         "the install) -> + DEMO_SHRINK, in a scratch clone, after the demo and in its "
         "MODEL_DIR (/tmp/ptjax_demo is both's default): the same table, of the finished runs.",
         background=lambda c, x, run: demo_job(c, x, run)),
    Rule("released prompt", r"^python -m ptjax\.main .*--gin_file=\S*models/" + REAL_T5_MODEL +
         r".*runs/(?:eval|infer)\.gin.*\$\{PROMPT_FILE\}", released_prompt,
         "docs/coming_from_t5x.md's translated eval / infer of a released prompt -> the real "
         "T5 gin replaced by TINY_MODEL_GIN + RELEASED_WIDTH (768 wide, as the released base "
         "prompts), ${PRETRAINED_MODEL} = that model's T5X checkpoint at step 1,100,000 built "
         "here, ${PROMPT_FILE} = the shared fixture " + RELEASED_PROMPT + ", RELEASED_SHRINK "
         "(lengths, batch), run inside TFDS mock data (MOCK_EXAMPLES examples); the official "
         "task module is reported as not installed and its task name resolves to "
         "pt_glue_sst2_v002_taskless; eval writes accuracy and loss, infer one row per "
         "example with input, prediction and score only."),
    Rule("real T5", r"^(?!.*\$\{PROMPT_FILE\})python -m ptjax\.main .*--gin_file=\S*models/" +
         REAL_T5_MODEL, real_t5,
         "`python -m ptjax.main` with a real T5 model gin (t5_1_1_{small..xxl}, "
         "t5_1_1_lm100k_*) -> that gin replaced by TINY_MODEL_GIN, INITIAL_CHECKPOINT_PATH by "
         "the shared fixture t5x/tiny_inline.checkpoint_0, the vocabulary by the fixture "
         "t5_vocab/sentencepiece.model through the README's offline variable (\"set `X` to "
         "a local copy\"; VOCAB_BINDING if it names none), shell variables from SHELL_VARS, "
         "the relative TSV/JSONL files it names written into its scratch cwd (six questions "
         "with the command's two CLASS_LABELS, else yes/no), a MIXTURE_OR_TASK_MODULE that "
         "is the user's own written there as a stand-in registering MIXTURE_OR_TASK_NAME "
         "from them (as the docs show), /tmp re-rooted, T5_SHRINK[<its runs/*.gin>] "
         "appended; ACTIVATION_DTYPE='bfloat16' kept (runs on CPU too). Training writes "
         "prompt.npy (PROMPT_LENGTH rows), peft_adapter/ and eval/<task>/step_<n>."
         "metrics.json; the eval line after it (its `...` filled from the training line) "
         "runs after the training, finds the PROMPT_FILE the training wrote and writes new "
         "metrics with a loss. Twice (training lines without shell variables): the same "
         "again in the same MODEL_DIR exits 0 and leaves prompt.npy as it was (a finished "
         "run reports its last evaluation).",
         twice=real_t5_twice, background=lambda c, x, run: t5_job(c, x, run)),
    Rule("serve", r"^python -m ptjax\.main .*runs/serve\.gin", serve,
         "serving (`gin/runs/serve.gin ... < requests.jsonl`) -> INITIAL_CHECKPOINT_PATH=... = the "
         "shipped mini T5 (MINI_CHECKPOINT), /tmp/ptjax_demo/prompt_tuning = the demo's run "
         "(the demo runs first), requests.jsonl = two requests for its TASK_PROMPTS' first "
         "task, in its cwd; answers both with prediction and score.",
         background=lambda c, x, run: mini_job(c, x)),
    Rule("neighbours", r"^python -m ptjax\.main .*runs/neighbours\.gin", neighbours,
         "neighbours (`gin/runs/neighbours.gin`) -> MODEL_DIR=... = a tmp folder, "
         "INITIAL_CHECKPOINT_PATH=... = the shipped mini T5, RUN = the demo's prompt-tuning run; "
         "writes neighbours.txt (naming each of PROMPT_FILES' prompts) and neighbours.json.",
         background=lambda c, x, run: mini_job(c, x)),
    Rule("bare module", r"^python -m ptjax\.[\w.]+$", bare_module,
         "a bare module name in prose (`python -m ptjax.main`, `python -m ptjax.experiments`) -> "
         "`--help`: prints its usage (absl exits 1, argparse 0), no traceback."),
    Rule("experiments list/status/table", r"^python -m ptjax\.experiments (list|status|table)\b",
         experiments_read,
         "`python -m ptjax.experiments list|status|table ...` -> as shown, in-process (runpy, as "
         "`python -m` runs it), --root (given, e.g. /data/exp, or the CLI's default) re-rooted "
         "under tmp, in a scratch cwd; list: every grid / every run as a `python -m ptjax.main` "
         "line; status: `0 done, 0 started, N pending of N` per grid; table on the empty root: "
         "exit 0, one `GRID: no finished cells under ROOT/GRID.` line per grid, nothing written "
         "to --out.", twice=experiments_read_twice),
    Rule("experiments run", r"^python -m ptjax\.experiments run\b", experiments_run,
         "`python -m ptjax.experiments run ...` -> in-process, root re-rooted, with --dry_run: "
         "the t5 family needs the real T5 weights (gs://, not offline) and a mini grid is "
         "hundreds of steps per run (tests/experiments runs one tiny cell of every grid end to "
         "end); `GRID` -> all; prose `run ...` -> the run command inside the TPU launch script "
         "of the launch command before it. Prints each grid's plan header and its "
         "`python -m ptjax.main` lines.", twice=experiments_run_twice),
    Rule("experiments launch", r"^python -m ptjax\.experiments launch\b", launch,
         "`python -m ptjax.experiments launch ...` -> in-process in the block's scratch cwd "
         "(`--X=...` -> a stand-in value; the root is kept: it is only written into the "
         "script), then the script it wrote runs with stand-in gcloud/ssh/scp on PATH that "
         "record their argv: TPU: one `gcloud compute tpus tpu-vm ssh HOST --worker=all` "
         "(every worker) with the zone/project given, running the docs' `pip install ... "
         "jax[tpu]` line and "
         "`python -m ptjax.experiments run GRID` with the options given and "
         "--flags=--initialize_distributed; GPU: `ssh HOST` with the docs' `jax[cuda12]` "
         "install line and a nohup "
         "run. The inner run command then runs dry (root re-rooted) and exits 0.",
         twice=launch_twice),
    Rule("launch script", r"^\./launch_\w+\.sh$", launch_script,
         "`./launch_<grid>_<target>.sh` -> the script the launch command before it in its block "
         "wrote, run in that scratch cwd with the recording stand-ins; the same calls."),
    Rule("pip", r"^pip install\b", pip_install,
         "`pip install ARGS` -> `python -m pip install --dry-run --no-deps --no-index "
         "--no-build-isolation ARGS` in the repository root: resolves the same requirements "
         "offline without changing the environment; each named requirement is `already "
         "satisfied` (extra known) and `.` would install ptjax."),
    Rule("show_tasks", r"^python -m ptjax\.data\.show_tasks\b", show_tasks,
         "`python -m ptjax.data.show_tasks ...` -> as shown, in-process; `--list` names the "
         "SuperGLUE, taskless and mini tasks."),
    Rule("convert", r"^python -m ptjax\.convert ", convert,
         "`python -m ptjax.convert --input PATH --output DIR --format {t5x,hf} [--config ...] "
         "[--dtype]` (a synopsis) -> once per format, in-process: the T5X fixture "
         "tiny_inline.checkpoint_0 -> HF (`--config tiny`), then that HF folder -> T5X; "
         "`[--dtype]` left out. Twice: the same two conversions again.",
         twice=convert_twice),
    Rule("prompts.extract", r"^python -m ptjax\.prompts\.extract ", prompt_extract,
         "`python -m ptjax.prompts.extract --input DIR --output OUT ...` -> in-process, paths "
         "re-rooted, --input first made a stand-in google-research/prompt-tuning MODEL_DIR "
         "(official_prompt_run: T5X checkpoint_1100010 of the tiny fixture + the prompt, "
         "numpy_checkpoints/checkpoint_1100010/encoder.prompt.prompt.prompt, config.gin): "
         "exit 0, OUT holds that prompt to the bit and, a PEFT adapter, names the fixture as "
         "base_model_name_or_path. Twice: exit 0, nothing rewritten.",
         twice=prompt_extract_twice),
    Rule("pretrain_mini.sh", r"^\./scripts/pretrain_mini\.sh\b", pretrain,
         "`./scripts/pretrain_mini.sh SIZE|large` -> `... large PRETRAIN_STEPS PRETRAIN_SHRINK` "
         "(SIZE -> large, the README's instance, so both run once) with OUT=/tmp/ptjax_pretrain/"
         "mini_<size> re-rooted; prints `pre-trained ...: <checkpoint_N>` and that T5X "
         "checkpoint exists, with curve.tsv.",
         background=lambda c, x, run: pretrain(c, x)),
    Rule("mini_reproduction.sh", r"^\./scripts/mini_reproduction\.sh\b", reproduction,
         "`./scripts/mini_reproduction.sh [SEEDS]` -> `... [SEEDS] --dry_run` (the script "
         "passes its extra flags to every `python -m ptjax.experiments`; --dry_run runs "
         "nothing) with ROOT and PTJAX_PRETRAIN_ROOT in tmp (hours of runs otherwise): "
         "names the missing pre-training "
         "of small, base and large instead of running it, prints every grid's mini plan, and "
         "writes nothing to docs/results. Also: Figure 1's and Figure 3b's seeds 0-2 runs are "
         "planned (test_mini_reproduction_seeds).",
         extra=reproduction_seeds,
         background=lambda c, x, run: reproduction_job(c, x)),
    Rule("plan", r"^python -m ptjax\.plan .", plan_command,
         "`python -m ptjax.plan ...` (docs/scale.md) -> a subprocess (the simulated device "
         "count is fixed when JAX starts), --model X -> PLAN_MODEL, the mesh and lengths "
         "kept; --table -> its sizes / slices replaced by PLAN_TABLE_SHRINK (tiny on 1xh200, "
         "64 inputs): the table's header comment (command, jax version, date) and the 1x1 "
         "row of both modes; a plan: the `fits` / `does not fit` line and the CPU-backend "
         "note; --json: one JSON object with a boolean `fits`."),
]
RULE_BY_NAME = {r.name: r for r in RULES}


def matching_rules(cmd):
  return [r for r in RULES if r.pattern.search(cmd.text)]


def match_rule(cmd):
  rules = matching_rules(cmd)
  return rules[0] if len(rules) == 1 else None


def rule_for(cmd) -> Rule:
  rules = matching_rules(cmd)
  if not rules:
    pytest.fail(f"{cmd.id}: documented command without a rule: add one: {cmd.text}")
  if len(rules) > 1:
    pytest.fail(f"{cmd.id}: documented command matches {len(rules)} rules "
                f"({[r.name for r in rules]}): make them exclusive: {cmd.text}")
  return rules[0]


__doc__ += "\n".join(textwrap.fill(f"{r.name}: {r.note}", 92, initial_indent="  - ",
                                    subsequent_indent="    ") for r in RULES) + "\n"


# --- Tests ------------------------------------------------------------------------------------

def _unique_ids(commands):
  seen = {}
  ids = []
  for c in commands:
    seen[c.id] = seen.get(c.id, 0) + 1
    ids.append(c.id if seen[c.id] == 1 else f"{c.id}#{seen[c.id]}")
  return ids


COMMANDS = docs_rules.all_commands()
IDS = _unique_ids(COMMANDS)


def _params(test, rule_attr=None):
  out = []
  for cmd, id_ in zip(COMMANDS, IDS):
    rule = match_rule(cmd)
    if rule_attr is not None and (rule is None or getattr(rule, rule_attr) is None):
      continue
    if test == "twice" and not (rule.name in TWICE_RULES and
                                re.search(TWICE_RULES[rule.name], cmd.text)):
      continue
    marks = []
    for (kind, rule_name, pattern), reason in KNOWN_FAILURES.items():
      if kind == test and rule is not None and rule.name == rule_name and \
          re.search(pattern, cmd.text):
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    out.append(pytest.param(cmd, id=id_, marks=marks))
  return out


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, request):
  """The session context; starts the selected tests' expensive runs in two background
  threads (the tests then wait for their own)."""
  context = Context(str(tmp_path_factory.mktemp("docs_commands")))
  jobs = []
  for item in request.session.items:
    cmd = getattr(item, "callspec", None) and item.callspec.params.get("cmd")
    if item.module is not sys.modules[__name__] or cmd is None:
      continue
    rule = match_rule(cmd)
    if rule is not None and rule.background is not None:
      jobs.append((rule, cmd, 2 if item.originalname.endswith("_twice") else 1))
  # Longest first, then in test order; what reads the demo's run last.
  order = [("mini_reproduction.sh", 1), ("demo.sh", 1), ("pretrain_mini.sh", 1),
           ("real T5", 1), ("test.sh", 1), ("demo.sh", 2), ("real T5", 2), ("demo.gin", 1),
           ("serve", 1), ("neighbours", 1)]
  jobs.sort(key=lambda j: order.index((j[0].name, j[2])) if (j[0].name, j[2]) in order
            else len(order))

  def prefetch(rule, cmd, run):
    if context.stop.is_set():
      return
    try:
      rule.background(cmd, context, run)
    except BaseException:  # pylint: disable=broad-except
      pass   # The test reports it (Once keeps the job's error; asserts run in the test).
  pool = futures.ThreadPoolExecutor(max_workers=BACKGROUND_THREADS,
                                    thread_name_prefix="docs-prefetch")
  for rule, cmd, run in jobs:
    pool.submit(prefetch, rule, cmd, run)
  yield context
  context.stop.set()
  pool.shutdown(wait=True, cancel_futures=True)
  config = request.config
  reporter = config.pluginmanager.get_plugin("terminalreporter")
  capture = config.pluginmanager.get_plugin("capturemanager")
  if reporter is not None and capture is not None and (
      config.option.verbose > 0 or getattr(config.option, "durations", None) is not None):
    with capture.global_and_fixture_disabled():
      reporter.write_line("")
      reporter.write_line("tests/test_docs_commands.py: seconds per subprocess run here:")
      for what, seconds in sorted(context.timings, key=lambda t: -t[1]):
        reporter.write_line(f"  {seconds:6.1f}  {what}")


def test_every_documented_command_has_exactly_one_rule():
  problems = []
  for cmd, id_ in zip(COMMANDS, IDS):
    rules = matching_rules(cmd)
    if len(rules) != 1:
      problems.append(f"{id_}: {len(rules)} rules {[r.name for r in rules]}: {cmd.text}")
  assert not problems, ("documented command without a rule: add one (or make rules "
                        "exclusive):\n" + "\n".join(problems))
  assert len(COMMANDS) > 20, f"only {len(COMMANDS)} commands found: is the extractor broken?"


def test_extractor_joins_continuations_strips_comments_and_fills_ellipsis():
  text = ("Run `python -m ptjax.main\n--gin_file=x.gin` or `--not-a-command`.\n\n"
          "```bash\n"
          "python -m ptjax.main --gin_file=a.gin \\\n  --gin.A=\"'#x'\" --gin.B=1   # why\n"
          "python -m ptjax.main --gin_file=b.gin ... --gin.B=2\n"
          "echo no\n```\n```python\npython -m not.shell\n```\n")
  commands = docs_rules.extract("X.md", text)
  assert [(c.line, c.text) for c in commands] == [
      (1, "python -m ptjax.main --gin_file=x.gin"),
      (5, "python -m ptjax.main --gin_file=a.gin --gin.A=\"'#x'\" --gin.B=1"),
      (7, "python -m ptjax.main --gin_file=b.gin ... --gin.B=2")]
  assert docs_rules.fill_ellipsis(commands[2]) == [
      "python", "-m", "ptjax.main", "--gin_file=b.gin", "--gin.A='#x'", "--gin.B=2"]


@pytest.mark.parametrize("cmd", _params("run"))
def test_documented_command(cmd, ctx):
  rule_for(cmd).transform(cmd, ctx)


@pytest.mark.parametrize("cmd", _params("twice", "twice"))
def test_documented_command_twice(cmd, ctx):
  rule_for(cmd).twice(cmd, ctx)


@pytest.mark.parametrize("cmd", _params("seeds", "extra"))
def test_mini_reproduction_seeds(cmd, ctx):
  rule_for(cmd).extra(cmd, ctx)
