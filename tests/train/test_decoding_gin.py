"""Decoding from gin (gin/decoding/*.gin): eval, infer and serve predict exactly what
`inference.generate` gives with the file's settings; a decoding setting is honoured or
refused in one line, never silently ignored; sampling repeats with its seed."""

import functools
import json
import os

import gin
import jax
import numpy as np
import pytest

from conftest import INLINE_CKPT, INLINE_CONFIG, shared_fixture
from ptjax import prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.data import vocabularies
from ptjax.model import inference
from ptjax.train import evaluation, gin_utils
from test_eval_tasks import run_cli  # `python -m ptjax.main ARGV` in this process.

LENGTHS = {"inputs": 16, "targets": 4}
BATCH = 4
PROMPT_LENGTH = 5
WORDS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"]
# What each of ptjax's decoding files sets, as `inference.generate`'s arguments (and the
# sampling seed, DECODING_SEED's default 0).
FILES = {
    "greedy": ({"method": "greedy"}, None),
    "beam_search": ({"method": "beam", "num_beams": 4, "alpha": 0.6}, None),
    "nucleus_sampling": ({"method": "sample", "temperature": 1.0, "topk": 0, "topp": 0.9}, 0),
    "temperature": ({"method": "sample", "temperature": 0.7, "topk": 0, "topp": 0.0}, 0),
}


def write_tsv(path, rows):
  with open(path, "w") as f:
    f.write("inputs\ttargets\n" + "".join(f"{i}\t{t}\n" for i, t in rows))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """A TSV task (6 validation rows: a full batch and a padded one) and a prompt file."""
  folder = tmp_path_factory.mktemp("decoding")
  rng = np.random.default_rng(0)
  rows = {split: [(f"is {w} sweet?", "yes" if len(w) % 2 else "no") for w in rng.choice(WORDS, n)]
          for split, n in (("train", 8), ("validation", 6))}
  for split, split_rows in rows.items():
    write_tsv(folder / f"{split}.tsv", split_rows)
  prompt = rng.uniform(-0.5, 0.5, (PROMPT_LENGTH, INLINE_CONFIG.emb_dim)).astype(np.float32)
  np.save(folder / "prompt.npy", prompt)
  return {"dir": folder, "train": str(folder / "train.tsv"),
          "validation": str(folder / "validation.tsv"), "prompt": str(folder / "prompt.npy"),
          "inputs": [i for i, _ in rows["validation"]],
          "vocab": shared_fixture("t5_vocab/sentencepiece.model"),
          "checkpoint": shared_fixture(INLINE_CKPT)}


def task_args(world, model_dir, run, *extra, task=True, vocab=True):
  """A run of `run`.gin on the TSV task (task=False: no task file) with the tiny T5X model
  and the prompt file (vocab=False: no VOCAB_PATH, which registered tasks do not read)."""
  files = ["--gin_file=gin/tasks/text_files.gin", f"--gin.TRAIN_FILE='{world['train']}'",
           f"--gin.VALIDATION_FILE='{world['validation']}'"] if task else []
  files += [f"--gin.VOCAB_PATH='{world['vocab']}'"] if vocab else []
  return ["--gin_file=gin/models/t5_1_1_tiny.gin", f"--gin_file=gin/runs/{run}.gin", *files,
          f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.INITIAL_CHECKPOINT_PATH='{world['checkpoint']}'",
          f"--gin.BATCH_SIZE={BATCH}", f"--gin.PROMPT_LENGTH={PROMPT_LENGTH}",
          f"--gin.PROMPT_FILE='{world['prompt']}'", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS!r}",
          *extra]


def rows_of(model_dir, kind, task="ptjax_text_task"):
  path = os.path.join(model_dir, kind, task, "step_0.jsonl")
  return [json.loads(line) for line in open(path)]


@functools.lru_cache(maxsize=None)
def _model(checkpoint, prompt_file):
  _, params = load_checkpoint(checkpoint, INLINE_CONFIG)
  return (prompts.PromptT5(INLINE_CONFIG, prompt_length=PROMPT_LENGTH),
          {"params": params, "prompt": {"prompt": np.load(prompt_file)}})


def encode(world, texts, rows=BATCH):
  """Input texts -> [rows, inputs length] tokens as seqio gives them (trimmed, EOS)."""
  vocab = vocabularies.t5_vocabulary(world["vocab"])
  tokens = np.zeros((rows, LENGTHS["inputs"]), np.int32)
  for i, text in enumerate(texts):
    ids = list(vocab.encode(text))[:LENGTHS["inputs"] - 1] + [1]
    tokens[i, :len(ids)] = ids
  return tokens


def expected_generate(world, texts, kwargs, seed=None, max_decode_length=LENGTHS["targets"]):
  """(predictions, scores) of `inference.generate` called directly with `kwargs`, batch by
  batch as a run makes them: BATCH rows (padding rows of zeros), batch b sampling with
  fold_in(key(seed), b)."""
  model, variables = _model(world["checkpoint"], world["prompt"])
  vocab = vocabularies.t5_vocabulary(world["vocab"])
  generate = jax.jit(functools.partial(inference.generate, model,
                                       max_decode_length=max_decode_length, **kwargs))
  predictions, scores = [], []
  for b, start in enumerate(range(0, len(texts), BATCH)):
    chunk = texts[start:start + BATCH]
    rng = None if seed is None else jax.random.fold_in(jax.random.key(seed), b)
    tokens, score = map(np.asarray, generate(variables, encode(world, chunk), rng=rng))
    predictions += [vocab.decode([int(t) for t in row if t > 0]) for row in tokens[:len(chunk)]]
    scores += [float(s) for s in score[:len(chunk)]]
  return predictions, scores


def assert_rows_are(rows, predictions, scores):
  assert [r["prediction"] for r in rows] == predictions
  np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(FILES))
def test_decoding_file_makes_eval_predict_what_generate_gives(name, world, tmp_path):
  model_dir = tmp_path / name
  run_cli(task_args(world, model_dir, "eval", f"--gin_file=gin/decoding/{name}.gin"))
  kwargs, seed = FILES[name]
  predictions, scores = expected_generate(world, world["inputs"], kwargs, seed)
  rows = rows_of(model_dir, "eval")
  assert [r["input"] for r in rows] == world["inputs"]
  assert_rows_are(rows, predictions, scores)
  if name != "greedy":  # The file changed the outputs: greedy's are not these.
    greedy = expected_generate(world, world["inputs"], FILES["greedy"][0])
    assert greedy != (predictions, scores)
    assert not np.allclose(greedy[1], scores)


@pytest.mark.parametrize("name", ["beam_search", "nucleus_sampling"])
def test_decoding_file_makes_infer_predict_what_generate_gives(name, world, tmp_path):
  model_dir = tmp_path / name
  run_cli(task_args(world, model_dir, "infer", f"--gin_file=gin/decoding/{name}.gin",
                    "--gin.BEAM_SIZE=3" if name == "beam_search" else "--gin.TOPP=0.8"))
  kwargs, seed = FILES[name]
  kwargs = dict(kwargs, **({"num_beams": 3} if name == "beam_search" else {"topp": 0.8}))
  rows = rows_of(model_dir, "infer")
  assert all(set(r) == {"input", "prediction", "score"} for r in rows)
  assert_rows_are(rows, *expected_generate(world, world["inputs"], kwargs, seed))


def test_sampling_repeats_with_its_seed_and_changes_with_another(world, tmp_path):
  outputs = []
  for k, seed in enumerate((7, 7, 8)):
    model_dir = tmp_path / f"run_{k}"
    run_cli(task_args(world, model_dir, "eval", "--gin_file=gin/decoding/temperature.gin",
                      "--gin.TEMPERATURE=1.5", f"--gin.DECODING_SEED={seed}",
                      "--gin.MAX_DECODE_LENGTH=6"))
    outputs.append([(r["prediction"], r["score"]) for r in rows_of(model_dir, "eval")])
  assert outputs[0] == outputs[1] and outputs[0] != outputs[2]
  kwargs = dict(FILES["temperature"][0], temperature=1.5)
  expected = expected_generate(world, world["inputs"], kwargs, 7, max_decode_length=6)
  assert [p for p, _ in outputs[0]] == expected[0]


def test_serve_decodes_with_the_decoding_file(world, tmp_path):
  requests = tmp_path / "requests.jsonl"
  requests.write_text("".join(json.dumps({"task": "t", "inputs": i}) + "\n"
                              for i in world["inputs"]))
  answers = tmp_path / "answers.jsonl"
  run_cli(["--gin_file=gin/models/t5_1_1_tiny.gin", "--gin_file=gin/runs/serve.gin",
           "--gin_file=gin/decoding/beam_search.gin", f"--gin.VOCAB_PATH='{world['vocab']}'",
           f"--gin.INITIAL_CHECKPOINT_PATH='{world['checkpoint']}'",
           f"--gin.TASK_PROMPTS={{'t': '{world['prompt']}'}}", f"--gin.REQUESTS='{requests}'",
           f"--gin.OUTPUT='{answers}'", f"--gin.BATCH_SIZE={BATCH}",
           f"--gin.MAX_INPUT_LENGTH={LENGTHS['inputs']}", "--gin.MAX_DECODE_LENGTH=5"])
  rows = [json.loads(line) for line in open(answers)]
  predictions, scores = expected_generate(world, world["inputs"], FILES["beam_search"][0],
                                          max_decode_length=5)
  assert [r["prediction"] for r in rows] == predictions
  np.testing.assert_allclose([r["score"] for r in rows], scores, rtol=1e-4, atol=1e-4)


# --- Never silent ------------------------------------------------------------------------

def parse(world, tmp_path, run, *files, bindings=()):
  gin.clear_config()
  return gin_utils.parse(
      ["models/t5_1_1_tiny.gin", f"runs/{run}.gin", "tasks/text_files.gin", *files],
      [f"MODEL_DIR='{tmp_path}'", f"TRAIN_FILE='{world['train']}'",
       f"VALIDATION_FILE='{world['validation']}'", f"VOCAB_PATH='{world['vocab']}'",
       f"INITIAL_CHECKPOINT_PATH='{world['checkpoint']}'", *bindings])


def test_a_binding_of_generate_s_method_is_an_error_naming_decoding_method(world, tmp_path):
  mine = tmp_path / "mine.gin"
  mine.write_text("from __gin__ import dynamic_registration\n"
                  "from ptjax.model import inference\n"
                  "inference.generate.method = 'beam'\n")
  with pytest.raises(gin_utils.GinConfigError,
                     match=r"^inference\.generate\.method \(set by .*mine\.gin\) is not read by "
                           r"this run: ptjax's name is DECODING_METHOD"):
    parse(world, tmp_path, "eval", str(mine))
  with pytest.raises(gin_utils.GinConfigError, match="ptjax's name is DECODING_METHOD"):
    parse(world, tmp_path, "infer", bindings=["inference.generate.method = 'beam'"])
  # T5X's names of the same settings.
  for binding, name in [("decoding.beam_search.alpha = 0.8", "BEAM_ALPHA"),
                        ("decoding.temperature_sample.topp = 0.9", "TOPP"),
                        ("models.EncoderDecoderModel.predict_batch_with_aux.num_decodes = 8",
                         "BEAM_SIZE")]:
    with pytest.raises(gin_utils.GinConfigError, match=f"ptjax's name is {name}"):
      parse(world, tmp_path, "eval", bindings=[binding])


@pytest.mark.parametrize("run", ["eval", "infer", "prompt_tune", "model_tune",
                                 "prompt_design"])
def test_every_run_that_decodes_reads_the_decoding_macros(run, world, tmp_path):
  parse(world, tmp_path, run, "decoding/nucleus_sampling.gin",
        bindings=["TOPP = 0.5", "DECODING_SEED = 3", "MAX_DECODE_LENGTH = 7"])
  selector = ("ptjax.train.trainer.train" if run.endswith("_tune") else
              "ptjax.train.evaluation.evaluate")
  decoding = gin.get_bindings(selector)["evaluator"].decoding
  assert decoding == inference.DecodingConfig(method="temperature_sample", topp=0.5, seed=3,
                                              max_decode_length=7)


def test_experiment_grids_take_the_decoding_macros_grid_wide():
  """`python -m ptjax.experiments run GRID --set DECODING_METHOD="'beam_search'"`: every run
  of a grid (training, prompt design, ensembles) reads the decoding macros."""
  from ptjax.experiments import __main__ as experiments
  assert {"DECODING_METHOD", "BEAM_SIZE", "BEAM_ALPHA", "TEMPERATURE", "TOPK", "TOPP",
          "MAX_DECODE_LENGTH", "DECODING_SEED", "CLASS_LABELS"} <= experiments._known_macros()


def test_serve_and_ensemble_read_the_decoding_macros(tmp_path):
  for run, selector, bindings in [
      ("serve", "ptjax.serve.serve", ["TASK_PROMPTS = {}"]),
      ("ensemble", "ptjax.ensemble.evaluate", ["PROMPT_FILES = []", f"MODEL_DIR='{tmp_path}'",
                                               "MIXTURE_OR_TASK_NAME = 'x'"])]:
    gin.clear_config()
    gin_utils.parse(["models/t5_1_1_tiny.gin", f"runs/{run}.gin", "decoding/beam_search.gin"],
                    ["INITIAL_CHECKPOINT_PATH = 'x'", "BEAM_SIZE = 2", *bindings])
    decoding = gin.get_bindings(selector)["decoding"]
    assert decoding == inference.DecodingConfig(method="beam_search", beam_size=2), run


@pytest.mark.parametrize("extra,message", [
    (["--gin.TOPP=0.9"], "TOPP=0.9 has no effect with DECODING_METHOD='greedy' (it would be "
                         "ignored): remove it, or choose the method that uses it "
                         "('temperature_sample', gin/decoding/*.gin)."),
    (["--gin_file=gin/decoding/beam_search.gin", "--gin.TEMPERATURE=0.5"],
     "TEMPERATURE=0.5 has no effect with DECODING_METHOD='beam_search'"),
    (["--gin.DECODING_METHOD='beam'"], "DECODING_METHOD='beam': use one of ['greedy', "
                                       "'beam_search', 'temperature_sample'] ('beam_search' is "
                                       "T5X's name)"),
    (["--gin_file=gin/decoding/nucleus_sampling.gin", "--gin.TOPP=1.5"],
     "TOPP=1.5 must be a number in [0, 1]"),
    (["--gin_file=gin/decoding/beam_search.gin", "--gin.RANK_CLASSIFICATION=True",
      "--gin.CLASS_LABELS=['yes', 'no']"],
     "RANK_CLASSIFICATION=True scores the label words and decodes nothing, so "
     "DECODING_METHOD='beam_search' would be ignored"),
])
def test_a_decoding_setting_that_would_be_ignored_fails_in_one_line(extra, message, world,
                                                                    tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    run_cli(task_args(world, tmp_path / "run", "eval", *extra))
  assert exit_.value.code == 2
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last
  assert not (tmp_path / "run" / "eval").exists()  # Refused before evaluating anything.


def test_decoding_config_in_python():
  config = inference.DecodingConfig(method="beam_search", beam_size=2, alpha=1.0)
  assert config.generate_kwargs() == {"method": "beam", "num_beams": 2, "alpha": 1.0}
  assert config.rng(0) is None and config.length(9) == 9
  assert config.changed() == ["DECODING_METHOD='beam_search'", "BEAM_SIZE=2", "BEAM_ALPHA=1.0"]
  sample = inference.DecodingConfig(method="temperature_sample", seed=4, max_decode_length=3)
  assert np.array_equal(jax.random.key_data(sample.rng(1)),
                        jax.random.key_data(jax.random.fold_in(jax.random.key(4), 1)))
  assert sample.length(9) == 3
  with pytest.raises(ValueError, match=r"^BEAM_SIZE=0 must be an integer >= 1\.$"):
    inference.DecodingConfig(method="beam_search", beam_size=0)
  with pytest.raises(ValueError, match=r"^DECODING_SEED=3 has no effect with DECODING_METHOD="):
    inference.DecodingConfig(seed=3)
  assert evaluation.EvalConfig(decoding=config).decoding is config
