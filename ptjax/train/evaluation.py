"""Evaluation during training, and the `evaluate` entry point (eval.gin; infer.gin is it
with `output_subdir = 'infer'` and `predict_only = True`).

One pass over a split of a task (or of every task of a mixture): the summed loss (jitted
eval step) and predictions, either decoded (`inference.DecodingConfig`: greedy, beam search
or sampling; gin/decoding/*.gin) or by rank classification over the task's label words
(the catalog's for ptjax's tasks, CLASS_LABELS for the user's); postprocessed with the raw
examples and scored by the task's metric functions. Predictions that are not a legal label
are counted (`illegal_predictions`). Every pass writes `<out>/<task>/step_<n>.jsonl` (input,
target, prediction, score), `step_<n>.metrics.json`, and keeps `best.json` (the best value
and step of each metric). Inference (`predict_only`) needs no targets: it writes the
predictions alone (input, prediction, score), no loss, no metrics.
"""

import dataclasses
import functools
import json
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from ptjax import files, prompts
from ptjax.data import catalog, metrics as metrics_lib, pipeline, text_tasks
from ptjax.model import T5Config, inference
from ptjax.train import gin_utils, optim, partitioning, runs, utils
from ptjax.train.state import TrainState
from ptjax.train.step import LossConfig, build_steps


@dataclasses.dataclass(frozen=True)
class PromptDesign:
  """The paper's "prompt design" baseline: no training; every input is preceded by an
  instruction and `num_shots` solved examples drawn (seeded) from the train split.

  `separator` goes between the instruction, each shot and the input. The default ' ;; ' is
  a visible token sequence ('▁', ';', ';' in both T5's vocabulary and the mini world's,
  where ';' is a whole piece) that decodes back to itself and that task texts hardly ever
  contain. A newline cannot separate: SentencePiece normalises whitespace, so in both
  vocabularies '\\n' encodes exactly like a space and the shots would run together. Any
  separator can be set (gin: `evaluation.PromptDesign.separator`); one that tokenizes like
  a space (other than ' ' itself) or into unknown pieces is refused when the inputs are
  built (`check_separator`).
  """
  instruction: str = ""
  num_shots: int = 0
  seed: int = 0
  separator: str = " ;; "

  def check_separator(self, vocab, task_name: str) -> None:
    """ValueError when `separator` does not survive `vocab`'s tokenisation: it encodes
    like a space (e.g. '\\n'), or into the unknown piece."""
    separator = self.separator
    if separator != " " and list(vocab.encode(f"a{separator}b")) == list(vocab.encode("a b")):
      raise ValueError(
          f"PromptDesign separator {separator!r} tokenizes exactly like a space in "
          f"{task_name}'s vocabulary (SentencePiece normalises whitespace): the instruction, "
          f"shots and input would run together. Use a visible separator, e.g. the default "
          f"{PromptDesign.separator!r} (--gin.evaluation.PromptDesign.separator=\"' ;; '\"), "
          f"or ' ' to mean a space.")
    unk = getattr(vocab, "unk_id", None)
    if unk is not None and unk in vocab.encode(separator):
      raise ValueError(
          f"PromptDesign separator {separator!r} has characters {task_name}'s vocabulary "
          f"does not know (it reads back as {vocab.decode(list(vocab.encode(separator)))!r}). "
          f"Use characters of the vocabulary, e.g. the default {PromptDesign.separator!r}.")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How predictions are made and scored (T5X's seqio.Evaluator settings, grouped).

  Attributes:
    max_examples: evaluate the first N examples of each task's split (MAX_EVAL_EXAMPLES;
      T5X's EVALUATOR_NUM_EXAMPLES); None = all.
    rank_classification: score every label word of the task and predict the best
      (RANK_CLASSIFICATION); False = decode (`decoding`). The label words are the catalog's
      for ptjax's tasks, else `class_labels`; a task with neither is refused.
    decode: make predictions at all (False: loss only, e.g. pre-training; `decoding` and
      rank classification then go unused).
    decoding: how predictions are decoded (DECODING_METHOD and its options,
      gin/decoding/*.gin). With rank classification nothing is decoded, so non-default
      settings are refused.
    class_labels: the label words of a task the catalog does not know (CLASS_LABELS: a
      user's TSV / JSONL or module task): ranked with RANK_CLASSIFICATION, and predictions
      outside them counted as `illegal_predictions`.
  """
  max_examples: Optional[int] = None
  rank_classification: bool = False
  decode: bool = True
  decoding: inference.DecodingConfig = inference.DecodingConfig()
  class_labels: Optional[Sequence[str]] = None

  def __post_init__(self):
    if self.max_examples is not None and (not isinstance(self.max_examples, int)
                                          or self.max_examples <= 0):
      raise ValueError(f"MAX_EVAL_EXAMPLES={self.max_examples!r} must be a positive integer "
                       f"or None.")
    labels = self.class_labels
    if labels is not None:
      if (isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not labels
          or not all(isinstance(l, str) and l.strip() for l in labels)):
        raise ValueError(f"CLASS_LABELS={labels!r} must be a list of label words (non-empty "
                         f"strings), e.g. ['yes', 'no'], or None.")
      if len(set(labels)) != len(labels):
        raise ValueError(f"CLASS_LABELS={list(labels)!r} repeats a label word.")
      object.__setattr__(self, "class_labels", tuple(labels))
    changed = self.decoding.changed()
    if self.rank_classification and self.decode and changed:
      raise ValueError(f"RANK_CLASSIFICATION=True scores the label words and decodes nothing, "
                       f"so {', '.join(changed)} would be ignored: drop the decoding settings "
                       f"(gin/decoding/*.gin), or set RANK_CLASSIFICATION=False to decode.")


def task_labels(task_name: str, class_labels: Optional[Sequence[str]] = None
                ) -> Optional[tuple[str, ...]]:
  """A task's label words: the catalog's (ptjax's registered tasks), else `class_labels`
  (CLASS_LABELS), else None."""
  labels = catalog.labels_of(task_name)
  if labels is None and class_labels:
    labels = tuple(class_labels)
  return labels


def check_tasks(tasks: Sequence, split: str, config: EvalConfig,
                predict_only: bool = False) -> None:
  """One-line ValueError, before any weights load, for what a pass over `split` of `tasks`
  cannot do: rank classification without label words, or evaluating (scoring targets) a
  split read from an inputs-only file."""
  for task in tasks:
    path = text_tasks.inputs_only_file(task.name, split)
    if path is not None and not predict_only:
      raise ValueError(f"Task file {path} has inputs only (no targets): it can be inferred "
                       f"(gin/runs/infer.gin), not evaluated or trained on; give every line "
                       f"its targets.")
    if (config.rank_classification and config.decode
        and task_labels(task.name, config.class_labels) is None):
      raise ValueError(f"RANK_CLASSIFICATION=True but task {task.name} has no known label "
                       f"words: set CLASS_LABELS=[...] (the words its targets use), or "
                       f"RANK_CLASSIFICATION=False to decode.")


def split_tasks(task_name: str, split: str) -> list:
  """The tasks of a task or mixture that have `split`; one-line ValueError when none has."""
  provider = pipeline.get_task(task_name)
  tasks = [t for t in getattr(provider, "tasks", [provider]) if split in t.splits]
  if not tasks:
    raise ValueError(f"{task_name} has no {split!r} split; its splits: {provider.splits}.")
  return tasks


def as_text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Evaluator:
  """Evaluates a (prompted) model on `split` of a task or of each task in a mixture.

  `predict_only` (inference): predictions alone, no loss or metrics; targets are never
  read, so a split without them (a test split, an inputs-only file) can be inferred."""

  def __init__(self, run, steps, dataset_cfg: utils.DatasetConfig,
               config: EvalConfig = EvalConfig(),
               prompt_design: Optional[PromptDesign] = None, predict_only: bool = False):
    task_name, feature_lengths = dataset_cfg.mixture_or_task_name, dataset_cfg.task_feature_lengths
    batch_size, split, max_examples = dataset_cfg.batch_size, dataset_cfg.split, config.max_examples
    decode, rank_classification = config.decode, config.rank_classification
    if not isinstance(batch_size, int) or batch_size <= 0:
      raise ValueError(f"BATCH_SIZE={batch_size!r} must be a positive integer.")
    self.setup, self.steps = run, steps
    self.lengths, self.batch_size, self.split = dict(feature_lengths), batch_size, split
    self.decode, self.rank, self.predict_only = decode, rank_classification, predict_only
    self.tasks = split_tasks(task_name, split)
    check_tasks(self.tasks, split, config, predict_only)
    self.labels = {t.name: task_labels(t.name, config.class_labels) for t in self.tasks}
    self.decoding = config.decoding
    self.examples = {}
    for task in self.tasks:
      examples = pipeline.eval_examples(task.name, self.lengths, split, max_examples)
      if prompt_design is not None:
        examples = _with_demonstrations(task, examples, prompt_design, self.lengths)
      self.examples[task.name] = examples
    self.sharding = partitioning.batch_sharding(run.mesh)
    self.generate = self.decoding.jit_generate(
        run.model, self.decoding.length(self.lengths["targets"]))
    self.rank_classify = jax.jit(functools.partial(inference.rank_classify, run.model))
    # Built now: a label too long for the targets fails before any training step.
    self.options = {task.name: self._options(task) for task in self.tasks}

  def _options(self, task) -> Optional[np.ndarray]:
    """The label words as target rows (rank classification), or None. Whenever the labels
    are known, each must fit the targets length with EOS, rank classification or not: a
    shorter length would train and decode truncated labels."""
    labels = self.labels[task.name]
    if labels is None:
      return None
    vocab = task.output_features["targets"].vocabulary
    options = np.zeros((len(labels), self.lengths["targets"]), np.int32)
    # The sentinel variant's targets start with <extra_id_0>: so must the scored options.
    first = [vocab.vocab_size - 1] if task.name.endswith("_sentinel") else []
    for i, label in enumerate(labels):
      ids = first + list(vocab.encode(label)) + [1]
      if len(ids) > self.lengths["targets"]:
        # Truncated options would rank label prefixes, not the labels the task is scored on.
        raise ValueError(
            f"Label {label!r} of {task.name} is {len(ids)} target tokens with EOS, more than "
            f"TASK_FEATURE_LENGTHS['targets'] = {self.lengths['targets']}: training, decoding "
            f"and rank classification would see a truncated label. Raise it, e.g. "
            f"--gin.TASK_FEATURE_LENGTHS=\"{{'inputs': {self.lengths['inputs']}, "
            f"'targets': {max(len(first) + len(vocab.encode(l)) + 1 for l in labels)}}}\".")
      options[i, :len(ids)] = ids
    return options if self.rank and self.decode else None

  def _global(self, batch: dict) -> dict:
    local = self.batch_size // jax.process_count()
    index = jax.process_index()
    return {k: jax.make_array_from_process_local_data(
        self.sharding, v[index * local:(index + 1) * local]) for k, v in batch.items()}

  def _task_pass(self, task, state, variables) -> tuple[dict, list]:
    examples = self.examples[task.name]
    vocab = task.output_features["targets"].vocabulary
    options = self.options[task.name]
    loss = tokens = 0.0
    texts, scores = [], []
    for batch_index, start in enumerate(range(0, len(examples), self.batch_size)):
      chunk = examples[start:start + self.batch_size]
      batch = self._global(pipeline.encdec_batch(chunk, self.lengths, self.batch_size))
      if not self.predict_only:
        m = self.steps.eval(state, self.setup.frozen, batch)
        loss, tokens = loss + float(m["loss"]), tokens + float(m["tokens"])
      if options is not None:
        choice, option_scores = self.rank_classify(variables, batch["encoder_input_tokens"],
                                                   options)
        choice, option_scores = multihost_utils.process_allgather((choice, option_scores),
                                                                  tiled=True)
        labels = self.labels[task.name]
        texts += [labels[int(c)] for c in np.asarray(choice)[:len(chunk)]]
        scores += [float(s) for s in np.asarray(option_scores).max(axis=1)[:len(chunk)]]
      elif self.decode:
        # Sampling: batch i draws with DecodingConfig.rng(i) (the same seed, the same output).
        decoded, logp = self.generate(variables, batch["encoder_input_tokens"],
                                      rng=self.decoding.rng(batch_index))
        decoded, logp = multihost_utils.process_allgather((decoded, logp), tiled=True)
        texts += [vocab.decode([int(t) for t in row if t > 0])
                  for row in np.asarray(decoded)[:len(chunk)]]
        scores += [float(s) for s in np.asarray(logp)[:len(chunk)]]
    if self.predict_only:  # Inference: the predictions alone; targets are never read.
      rows = [{"input": as_text(ex.get("inputs_pretokenized", b"")), "prediction": t,
               "score": s} for ex, t, s in zip(examples, texts, scores)]
      return {"predictions": len(rows)}, rows
    results = {"loss": loss / max(tokens, 1.0)}
    rows = []
    if texts:
      results.update(score_texts(task, examples, texts, self.labels[task.name]))
      rows = [{"input": as_text(ex.get("inputs_pretokenized", b"")),
               "target": as_text(ex["targets_pretokenized"]), "prediction": t, "score": s}
              for ex, t, s in zip(examples, texts, scores)]
    return results, rows

  def metric_names(self) -> set[str]:
    """The names `run_pass` returns (for BEST_METRIC, checked before training): the task's
    metrics of its first example scored against itself."""
    names = set()
    prefixes = [""] if len(self.tasks) == 1 else [f"{t.name}/" for t in self.tasks]
    for task, prefix in zip(self.tasks, prefixes):
      found = {"loss"}
      examples = self.examples[task.name][:1]
      if self.decode and examples:
        found |= set(score_texts(task, examples,
                                 [as_text(examples[0]["targets_pretokenized"])],
                                 self.labels[task.name]))
      names |= {prefix + n for n in found}
    if len(self.tasks) > 1 and self.decode:
      names.add("average_score")
    return names

  def run_pass(self, state: TrainState, step: int, out_dir: str,
               keep_best: bool = True) -> dict[str, float]:
    """Metrics of every task; for a mixture, names are '<task>/<metric>'. A non-finite
    metric is an error (nothing is written): a result is never NaN. `predict_only`: writes
    each task's predictions and returns {'predictions': count} (per task for a mixture)."""
    variables = optim.merge(state.trainable, self.setup.frozen)
    merged, quality = {}, {}
    for task in self.tasks:
      results, rows = self._task_pass(task, state, variables)
      if self.predict_only:
        if jax.process_index() == 0:
          _write_predictions(files.join(out_dir, task.name), step, rows)
        prefix = "" if len(self.tasks) == 1 else f"{task.name}/"
        merged.update({prefix + k: v for k, v in results.items()})
        continue
      bad = sorted(k for k, v in results.items() if not np.isfinite(v))
      if bad:
        raise ValueError(f"evaluation of {task.name} at step {step:,}: {', '.join(bad)} "
                         f"not finite (half precision overflow, or a diverged prompt); "
                         f"nothing was written.")
      if jax.process_index() == 0:
        _write(files.join(out_dir, task.name), step, self.split, results, rows, keep_best)
      prefix = "" if len(self.tasks) == 1 else f"{task.name}/"
      merged.update({prefix + k: v for k, v in results.items()})
      scores = {k: v for k, v in results.items() if k not in ("loss", "illegal_predictions")}
      if scores:
        quality[task.name] = scores
    if len(self.tasks) > 1 and quality:
      # SuperGLUE's average: the mean over tasks of each task's mean metric.
      merged["average_score"] = metrics_lib.superglue_score(quality)
    return merged

  def run(self, state: TrainState, step: int, model_dir: str) -> dict[str, float]:
    return self.run_pass(state, step, files.join(model_dir, "eval"))


def score_texts(task, examples: Sequence[Mapping], texts: Sequence[str],
                labels: Optional[Sequence[str]] = None) -> dict[str, float]:
  """The task's metrics of predicted `texts` (one per example, before postprocessing),
  plus `illegal_predictions` for classification tasks: predictions whose postprocessed form
  is not one of the postprocessed label words (`catalog.legal_predictions`; judged after
  the task's postprocessor, as the metrics are). `labels`: the label words of a task the
  catalog does not know (CLASS_LABELS), judged the same way."""
  post = task.postprocess_fn or (lambda x, **_: x)
  targets = [post(as_text(ex["targets_pretokenized"]), example=ex, is_target=True)
             for ex in examples]
  predictions = [post(t, example=ex, is_target=False) for t, ex in zip(texts, examples)]
  results = {}
  for fn in task.predict_metric_fns:
    results.update({k: float(v) for k, v in fn(targets, predictions).items()})
  if catalog.labels_of(task.name) is not None:
    results["illegal_predictions"] = float(sum(
        metrics_lib.count_illegal([p], catalog.legal_predictions(task, ex))
        for p, ex in zip(predictions, examples)))
  elif labels:
    results["illegal_predictions"] = float(sum(
        metrics_lib.count_illegal([p], [post(l, example=ex, is_target=False) for l in labels])
        for p, ex in zip(predictions, examples)))
  return results


def _write_predictions(folder: str, step: int, rows: list):
  """One pass's predictions, one JSON object a line, written whole (ptjax.files)."""
  files.write_text(files.join(folder, f"step_{step}.jsonl"),
                   "".join(json.dumps(r) + "\n" for r in rows))


def _write(folder: str, step: int, split: str, results: dict, rows: list,
           keep_best: bool = True):
  """Predictions, metrics and (`keep_best`: training's evaluations) best.json of one pass,
  each written whole (ptjax.files)."""
  _write_predictions(folder, step, rows)
  files.write_json(files.join(folder, f"step_{step}.metrics.json"),
                   {"step": step, "split": split, **results})
  if not keep_best:
    return
  path = files.join(folder, "best.json")
  best = files.read_json(path) if files.exists(path) else {}
  for name, value in results.items():
    old = best.get(name)
    if old is None or (value < old["value"] if metrics_lib.lower_is_better(name)
                       else value > old["value"]):
      best[name] = {"value": value, "step": step}
  files.write_json(path, best, indent=1)


def _with_demonstrations(task, examples: list, design: PromptDesign,
                         lengths: Mapping[str, int]) -> list:
  """Prepends the instruction and K train examples (inputs target) to every input,
  each followed by the design's separator, keeping the end (the example itself and EOS)
  when it does not fit. A separator the task's vocabulary would read as a space (SentencePiece
  turns '\\n' into one) or as unknown pieces is a ValueError."""
  vocab = task.output_features["inputs"].vocabulary
  if design.instruction or design.num_shots:
    design.check_separator(vocab, task.name)
  shots = []
  if design.num_shots:
    # Shots come from the first 1,000 train examples: enough to sample from, and cheap.
    train = pipeline.eval_examples(task.name, lengths, "train", max(1000, design.num_shots))
    picks = np.random.default_rng(design.seed).choice(len(train), design.num_shots,
                                                      replace=False)
    shots = [f"{as_text(train[i]['inputs_pretokenized'])} "
             f"{as_text(train[i]['targets_pretokenized'])}" for i in picks]
  prefix = design.separator.join([t for t in [design.instruction, *shots] if t])
  prefix_ids = np.asarray(vocab.encode(prefix + design.separator), np.int32) if prefix else \
      np.zeros((0,), np.int32)
  out = []
  for ex in examples:
    inputs = np.concatenate([prefix_ids, ex["inputs"]])[-lengths["inputs"]:]
    pretokenized = (prefix + design.separator).encode() + ex.get("inputs_pretokenized", b"")
    out.append({**ex, "inputs": inputs, "inputs_pretokenized": pretokenized})
  return out


def _frozen_run(model_config, restore: utils.RestoreCheckpointConfig,
                prompt: Optional[utils.PromptConfig], model_dir, partitioner):
  mesh = partitioner.mesh()
  prompt_init = prompts.from_file(prompt.file or model_dir) if prompt else None
  trainable = optim.PROMPT_ONLY if prompt else optim.EVERYTHING
  # Nothing trains here: FROZEN_DTYPE is every weight's, the bare model's too.
  run = runs.setup_run(model_config, restore.path, prompt.length if prompt else 0,
                       prompt_init, trainable, mesh, dtype=restore.dtype,
                       trainable_dtype=restore.dtype)
  scalar = partitioning.replicated(mesh)
  state = TrainState(step=jnp.zeros((), jnp.int32), trainable=run.trainable, opt_state=None,
                     rng=jax.random.PRNGKey(0))
  shardings = TrainState(step=scalar, trainable=run.trainable_shardings, opt_state=None,
                         rng=scalar)
  steps = build_steps(run.model, None, mesh, shardings, run.frozen_shardings, LossConfig(),
                      dropout=False)
  return run, state, steps


def evaluate(*, model_dir: str, model_config: T5Config, dataset_cfg: utils.DatasetConfig,
             restore_checkpoint_cfg: utils.RestoreCheckpointConfig,
             partitioner: partitioning.PjitPartitioner = partitioning.PjitPartitioner(),
             prompt: Optional[utils.PromptConfig] = utils.PromptConfig(),
             evaluator: EvalConfig = EvalConfig(),
             prompt_design: Optional[PromptDesign] = None,
             output_subdir: str = "eval", predict_only: bool = False) -> dict[str, float]:
  """Evaluates a frozen model + prompt on `dataset_cfg`'s split (T5X's `eval.evaluate`).

  The prompt is `prompt.file` (PROMPT_FILE: .npy, PEFT adapter or a ptjax run; None: the
  newest checkpoint in MODEL_DIR); `prompt=None` evaluates the bare model (prompt design:
  `prompt_design` puts an instruction and K solved examples before each input). The frozen
  model is `restore_checkpoint_cfg.path` (INITIAL_CHECKPOINT_PATH). Writes predictions and
  metrics under MODEL_DIR/<output_subdir>/<task>/ and returns the metrics.

  `predict_only` (gin/runs/infer.gin; T5X's `infer` in 'predict' mode): predictions alone,
  MODEL_DIR/<output_subdir>/<task>/step_0.jsonl rows {input, prediction, score}, for splits
  with or without targets (a test split, INFER_FILE); no loss, no metrics. Returns
  {'predictions': count}.
  """
  prompt = utils.prompt_or_none(prompt)
  if prompt is not None and prompt.init is not None:
    raise ValueError("A prompt initialiser (PROMPT_INIT, gin/prompts/*.gin) is set, but "
                     "evaluation reads a trained prompt (PROMPT_FILE or MODEL_DIR): drop the "
                     "prompts/ gin file.")
  # Fails before any weights load: an unknown task or split, rank classification without
  # label words, evaluating an inputs-only file.
  check_tasks(split_tasks(dataset_cfg.mixture_or_task_name, dataset_cfg.split),
              dataset_cfg.split, evaluator, predict_only)
  run, state, steps = _frozen_run(model_config, restore_checkpoint_cfg, prompt, model_dir,
                                  partitioner)
  evaluator_ = Evaluator(run, steps, dataset_cfg, evaluator, prompt_design, predict_only)
  if jax.process_index() == 0:  # Its own config, never the training run's config.gin.
    gin_utils.write_config(files.join(model_dir, output_subdir, "config.gin"))
  out = files.join(model_dir, output_subdir)
  # Its own files only: a training run in MODEL_DIR keeps its best.json and metrics.jsonl.
  results = evaluator_.run_pass(state, 0, out, keep_best=False)
  if predict_only:
    if jax.process_index() == 0:
      print(json.dumps({"task": dataset_cfg.mixture_or_task_name, "split": dataset_cfg.split,
                        "output": out, **results}), flush=True)
    return results
  runs.MetricLog(model_dir, files.join(out, "metrics.jsonl")).scalars(output_subdir, 0,
                                                                        results)
  if jax.process_index() == 0:
    print(json.dumps({"task": dataset_cfg.mixture_or_task_name, "split": dataset_cfg.split,
                      **results}), flush=True)
  return results
