"""The paper's figures and tables as named grids of concrete runs.

A grid expands to cells: one point of a figure or table for one seed. A cell is a short
chain of `python -m ptjax.main` runs (usually one; an LM-adaptation stage or an ensemble
evaluation adds one), each with its own MODEL_DIR under `<root>/<grid>/<cell>/seed_<k>`.
The family (families.py: t5 or
mini) gives the models, tasks and recipe.
"""

import ast
import dataclasses
import os
import re
import shlex
from typing import Optional, Sequence

from ptjax import files
from ptjax.experiments.families import FAMILIES, Family

SEEDS = (0, 1, 2)
DESIGN_SHOTS = 3  # Prompt design: a 3-shot text prompt (inputs get 4x the room).


def shell_quote(arg: str) -> str:
  """T5X-style: --gin.NAME="'value'" (double quotes where safe), else shlex's quoting."""
  if re.fullmatch(r"[\w@%+=:,./-]*", arg):
    return arg
  if not re.search(r'["$`\\!]', arg):
    return f'"{arg}"'
  return shlex.quote(arg)


@dataclasses.dataclass(frozen=True)
class Run:
  """One `python -m ptjax.main` invocation; done once `done_file` exists."""
  model_dir: str
  gin_files: tuple[str, ...]
  bindings: tuple[tuple[str, str], ...]  # (gin name, gin literal)
  done_file: str  # Relative to model_dir.
  fixed: tuple[str, ...] = ()  # Bindings overrides leave alone (they name done_file).
  # `--set` bindings: one setting for the whole grid, which runs that do not read it (an
  # ensemble run does not train) leave alone: ptjax.main --gin_bindings_if_read.
  grid_bindings: tuple[tuple[str, str], ...] = ()

  def argv(self) -> list[str]:
    return (["python", "-m", "ptjax.main"] + [f"--gin_file={f}" for f in self.gin_files] +
            [f"--gin.{name}={value}" for name, value in self.bindings] +
            [f"--gin_bindings_if_read={name} = {value}" for name, value in self.grid_bindings] +
            [f"--gin.MODEL_DIR={self.model_dir!r}"])

  def command(self) -> str:
    return " ".join(shell_quote(a) for a in self.argv())

  def done(self) -> bool:
    return files.exists(files.join(self.model_dir, self.done_file))


@dataclasses.dataclass(frozen=True)
class Cell:
  """A point of a figure or table for one seed: `coords` name the point (size, task,
  method, ...); the last run's metrics are the cell's result."""
  grid: str
  coords: tuple[tuple[str, str], ...]
  seed: int
  runs: tuple[Run, ...]
  requires: tuple[tuple[str, str], ...] = ()  # (path that must exist, how to make it)

  @property
  def name(self) -> str:
    return "/".join(f"{k}={v}" for k, v in self.coords) + f"/seed_{self.seed}"

  @property
  def model_dir(self) -> str:
    return self.runs[-1].model_dir


# --- Building runs -----------------------------------------------------------------------

_INITS = {"random_uniform": "prompts/random_uniform.gin",
          "sampled_vocab": "prompts/sampled_vocab.gin",
          "class_label": "prompts/class_labels.gin"}


def _labels_of(task: str) -> Optional[tuple[str, ...]]:
  from ptjax.data import catalog  # Registering tasks imports TF: only when expanding.
  from ptjax.data import mini_tasks, tasks  # noqa: F401 (registration)
  return catalog.labels_of(task)


def _main_metric(task: str) -> str:
  """The metric early stopping selects by: each task's official one (GLUE: MCC for CoLA,
  Pearson for STS-B)."""
  if "squad" in task or "record" in task:
    return "f1"
  if "multirc" in task:
    return "f1a"
  if "glue_cola" in task:
    return "mcc"
  if "glue_stsb" in task:
    return "pearson_corrcoef"
  return "accuracy"


def _best_metric(task: str, eval_task: Optional[str] = None) -> str:
  """Early stopping on the dev set, by the task's main metric. An evaluation mixture that
  holds the training task (Tables 1-2: in domain + zero-shot targets) chooses by that task
  alone, as choosing by a zero-shot target would look at it; other mixtures: the average."""
  import seqio
  evaluated = seqio.get_mixture_or_task(eval_task or task)
  if not isinstance(evaluated, seqio.Mixture):
    return _main_metric(evaluated.name)
  if task in [t.name for t in evaluated.tasks]:
    return f"{task}/{_main_metric(task)}"
  return "average_score"


def tuning_run(family: Family, model_dir: str, size: str, task: str, seed: int, *,
               method: str = "prompt_tuning", prompt_length: Optional[int] = None,
               init: str = "class_label", checkpoint: Optional[str] = None,
               eval_task: Optional[str] = None) -> Run:
  """A prompt tuning / model tuning / prompt design run of `task` on the family's `size`."""
  gin_files = [family.model_gin.format(size=size)]
  bindings = [("MIXTURE_OR_TASK_NAME", repr(task)),
              ("INITIAL_CHECKPOINT_PATH", repr(checkpoint or family.lm_adapted(size)))]
  bindings += family.task_bindings(task)
  labels = _labels_of(task)
  if method == "prompt_design":  # NUM_SHOTS solved train examples before each input.
    gin_files.append("runs/prompt_design.gin")
    lengths = ast.literal_eval(dict(bindings).get("TASK_FEATURE_LENGTHS",
                                                  "{'inputs': 512, 'targets': 16}"))
    lengths["inputs"] *= DESIGN_SHOTS + 1
    bindings = [b for b in bindings if b[0] != "TASK_FEATURE_LENGTHS"]
    bindings += [("TASK_FEATURE_LENGTHS", repr(lengths)), ("NUM_SHOTS", str(DESIGN_SHOTS))]
    return Run(model_dir, tuple(gin_files), tuple(bindings), "eval/metrics.jsonl")
  bindings += family.recipe + (("RANDOM_SEED", str(seed)),
                               ("BEST_METRIC", repr(_best_metric(task, eval_task))))
  if eval_task:
    bindings.append(("train_eval/utils.DatasetConfig.mixture_or_task_name", repr(eval_task)))
  if method == "model_tuning":
    gin_files.append("runs/model_tune.gin")
    bindings = list(dict(list(bindings) + list(family.model_tuning)).items())
  else:
    gin_files.append("runs/prompt_tune.gin")
    if init == "class_label" and not labels:
      init = "sampled_vocab"  # The paper: tasks without labels start from sampled vocab.
    gin_files.append(_INITS[init])
    if init == "class_label":
      bindings.append(("CLASS_LABELS", repr(list(labels))))
    if init == "sampled_vocab" and family.name == "mini":
      bindings.append(("initializers.sampled_vocab.max_id", "1000"))
    bindings.append(("PROMPT_LENGTH", str(prompt_length or family.prompt_length)))
  return Run(model_dir, tuple(gin_files), tuple(bindings), "metrics.jsonl")


def adaptation_run(family: Family, model_dir: str, size: str, steps: int) -> Run:
  """Figure 3d's LM adaptation stage: prefix LM for `steps` from span corruption."""
  task, lengths, _, _ = family.adaptation
  bindings = [("MIXTURE_OR_TASK_NAME", repr(task)), ("TASK_FEATURE_LENGTHS", repr(lengths)),
              ("INITIAL_CHECKPOINT_PATH", repr(family.span_corruption(size))),
              ("TRAIN_STEPS_RELATIVE", str(steps)), ("SAVING_PERIOD", str(steps)),
              ("EVAL_PERIOD", str(steps))]
  if family.name == "t5":  # T5's pre-training rate and batch, not the mini recipe's.
    bindings += [("LEARNING_RATE", "0.001"), ("BATCH_SIZE", "128")]
  # T5X names checkpoints by absolute step: the span-corruption step plus `steps`.
  return Run(model_dir, (family.model_gin.format(size=size), "runs/pretrain.gin"),
             tuple(bindings), f"{adapted_checkpoint(family, steps)}/checkpoint",
             fixed=("TRAIN_STEPS_RELATIVE", "SAVING_PERIOD", "EVAL_PERIOD"))


def adapted_checkpoint(family: Family, steps: int) -> str:
  """The folder name of Figure 3d's adaptation output after `steps` LM adaptation steps."""
  return f"checkpoint_{family.span_corruption_step + steps}"


def ensemble_run(family: Family, model_dir: str, size: str, task: str,
                 members: Sequence[str]) -> Run:
  """Table 3's one-pass ensemble of the members' prompts, majority vote."""
  bindings = [("MIXTURE_OR_TASK_NAME", repr(task)),
              ("INITIAL_CHECKPOINT_PATH", repr(family.lm_adapted(size))),
              ("PROMPT_FILES", repr(list(members)))] + [
                  # The ensemble decodes greedily (its members and votes are texts); it has no
                  # rank classification, so the family's RANK_CLASSIFICATION is not passed.
                  b for b in family.task_bindings(task) if b[0] != "RANK_CLASSIFICATION"]
  if family.name == "mini":
    bindings.append(("MAX_EVAL_EXAMPLES", "240"))
  return Run(model_dir, (family.model_gin.format(size=size), "runs/ensemble.gin"),
             tuple(bindings), "ensemble.json")


# --- The grids ---------------------------------------------------------------------------

def _cell(grid, root, coords, seed, runs_fn, requires=()):
  folder = os.path.join(root, grid, *[f"{k}={v}" for k, v in coords], f"seed_{seed}")
  return Cell(grid, tuple(coords), seed, tuple(runs_fn(folder)), tuple(requires))


def _needs(family: Family, size: str, checkpoint: str):
  return ((checkpoint, family.make_checkpoint(size)),)


def fig1_scale(family, root, sizes, tasks, seeds):
  """Figure 1: model tuning vs prompt tuning vs prompt design, over model size."""
  for size in sizes:
    for task in tasks:
      for method in ("model_tuning", "prompt_tuning", "prompt_design"):
        # Prompt design trains nothing and draws its shots without a seed: one point, seed 0.
        for seed in ((0,) if method == "prompt_design" else seeds):
          yield _cell("fig1_scale", root, [("size", size), ("task", task), ("method", method)],
                      seed, lambda d: [tuning_run(family, d, size, task, seed, method=method)],
                      _needs(family, size, family.lm_adapted(size)))


def fig3a_prompt_length(family, root, sizes, tasks, seeds):
  """Figure 3a: prompt length 1, 5, 20, 100, 150."""
  for size in sizes:
    for task in tasks:
      for length in (1, 5, 20, 100, 150):
        for seed in seeds:
          yield _cell("fig3a_prompt_length", root,
                      [("size", size), ("task", task), ("prompt_length", str(length))], seed,
                      lambda d: [tuning_run(family, d, size, task, seed, prompt_length=length)],
                      _needs(family, size, family.lm_adapted(size)))


def fig3b_init(family, root, sizes, tasks, seeds):
  """Figure 3b: random uniform vs sampled vocabulary vs class label initialisation."""
  for size in sizes:
    for task in tasks:
      for init in _INITS:
        for seed in seeds:
          yield _cell("fig3b_init", root, [("size", size), ("task", task), ("init", init)],
                      seed, lambda d: [tuning_run(family, d, size, task, seed, init=init)],
                      _needs(family, size, family.lm_adapted(size)))


def fig3c_objective(family, root, sizes, tasks, seeds):
  """Figure 3c: pre-training objective (span corruption, + sentinel, LM adaptation).

  'span_corruption_plus_sentinel': the span-corrupted model, with the task's inputs ending
  and targets starting with a sentinel, as in its pre-training."""
  for size in sizes:
    for task in tasks:
      for objective in ("span_corruption", "span_corruption_plus_sentinel", "lm_adaptation"):
        ckpt = (family.lm_adapted(size) if objective == "lm_adaptation"
                else family.span_corruption(size))
        run_task = (task.replace("_taskless", "_taskless_sentinel")
                    if objective.endswith("sentinel") else task)
        for seed in seeds:
          yield _cell("fig3c_objective", root,
                      [("size", size), ("task", task), ("objective", objective)], seed,
                      lambda d: [tuning_run(family, d, size, run_task, seed, checkpoint=ckpt)],
                      _needs(family, size, ckpt))


def fig3d_lm_adaptation_steps(family, root, sizes, tasks, seeds, adaptation_steps=None):
  """Figure 3d: LM adaptation steps (0 .. 100K; mini: 0 .. 500) before prompt tuning.

  The adaptation stage (prefix LM from the span-corruption checkpoint) is shared by every
  task and seed of a size; the full length is the family's LM-adapted checkpoint."""
  _, _, all_steps, full = family.adaptation
  all_steps = adaptation_steps or all_steps
  for size in sizes:
    for steps in all_steps:
      adapt = None
      if steps == 0:
        ckpt = family.span_corruption(size)
      elif steps == full:
        ckpt = family.lm_adapted(size)
      else:
        adapt = adaptation_run(family, os.path.join(
            root, "fig3d_lm_adaptation_steps", "adaptation", f"size={size}", f"steps={steps}"),
            size, steps)
        ckpt = os.path.join(adapt.model_dir, adapted_checkpoint(family, steps))
      needs = _needs(family, size, family.span_corruption(size) if adapt else ckpt)
      for task in tasks:
        for seed in seeds:
          yield _cell("fig3d_lm_adaptation_steps", root,
                      [("size", size), ("task", task), ("lm_adaptation_steps", str(steps))],
                      seed, lambda d: ([adapt] if adapt else []) + [
                          tuning_run(family, d, size, task, seed, checkpoint=ckpt)], needs)


def table1_squad_to_mrqa(family, root, sizes, tasks, seeds):
  """Table 1: train on SQuAD, F1 in domain and zero-shot out of domain."""
  del tasks
  train, evaluate = family.squad
  for size in sizes:
    for method in ("model_tuning", "prompt_tuning"):
      for seed in seeds:
        yield _cell("table1_squad_to_mrqa", root, [("size", size), ("method", method)], seed,
                    lambda d: [tuning_run(family, d, size, train, seed, method=method,
                                          eval_task=evaluate)],
                    _needs(family, size, family.lm_adapted(size)))


def table2_qqp_mrpc(family, root, sizes, tasks, seeds):
  """Table 2: zero-shot transfer between QQP and MRPC."""
  del tasks
  for size in sizes:
    for name, train, evaluate in family.paraphrase:
      for method in ("model_tuning", "prompt_tuning"):
        for seed in seeds:
          yield _cell("table2_qqp_mrpc", root,
                      [("size", size), ("transfer", name), ("method", method)], seed,
                      lambda d: [tuning_run(family, d, size, train, seed, method=method,
                                            eval_task=evaluate)],
                      _needs(family, size, family.lm_adapted(size)))


ENSEMBLE_SIZE = 5


def table3_ensemble(family, root, sizes, tasks, seeds, ensemble_size=ENSEMBLE_SIZE):
  """Table 3: five prompts per task on one frozen model, one-pass majority-vote ensemble.

  A cell per task and seed: seed s trains prompts with seeds 5s .. 5s+4."""
  for size in sizes:
    for task in tasks:
      for seed in seeds:
        def runs(d):
          members = [tuning_run(family, os.path.join(d, f"prompt_{k}"), size, task,
                                seed * ensemble_size + k) for k in range(ensemble_size)]
          return members + [ensemble_run(family, d, size, task,
                                         [m.model_dir for m in members])]
        yield _cell("table3_ensemble", root, [("size", size), ("task", task)], seed, runs,
                    _needs(family, size, family.lm_adapted(size)))


GRIDS = {f.__name__: f for f in (fig1_scale, fig3a_prompt_length, fig3b_init, fig3c_objective,
                                  fig3d_lm_adaptation_steps, table1_squad_to_mrqa,
                                  table2_qqp_mrpc, table3_ensemble)}
TABLE_GRIDS = ("table1_squad_to_mrqa", "table2_qqp_mrpc", "table3_ensemble")


def expand(grid: str, family: str = "t5", root: str = "/tmp/ptjax_experiments",
           sizes: Optional[Sequence[str]] = None, tasks: Optional[Sequence[str]] = None,
           seeds: Sequence[int] = SEEDS, ensemble_size: int = ENSEMBLE_SIZE,
           adaptation_steps: Optional[Sequence[int]] = None) -> list[Cell]:
  """Every cell of `grid` (the paper's full grid by default): `sizes` default to the
  family's ladder (Tables 1-3: its largest shipped / the paper's XXL), `tasks` to its
  SuperGLUE(-like) tasks."""
  if grid not in GRIDS:
    raise ValueError(f"Unknown grid {grid!r}; grids: {sorted(GRIDS)}.")
  if family not in FAMILIES:
    raise ValueError(f"Unknown family {family!r}; families: {sorted(FAMILIES)}.")
  fam = FAMILIES[family]
  if sizes is None:
    sizes = (fam.table_size,) if grid in TABLE_GRIDS else fam.sizes
  unknown = [s for s in sizes if s not in fam.sizes]
  if unknown:
    raise ValueError(f"Sizes {unknown} are not in the {family} family; its sizes: "
                     f"{list(fam.sizes)}.")
  tasks = tuple(tasks or fam.superglue)
  options = {"table3_ensemble": {"ensemble_size": ensemble_size},
             "fig3d_lm_adaptation_steps": {"adaptation_steps": adaptation_steps}}
  return list(GRIDS[grid](fam, root, tuple(sizes), tasks, tuple(seeds),
                          **options.get(grid, {})))


def with_bindings(cell: Cell, bindings: Sequence[tuple[str, str]]) -> Cell:
  """The cell with `bindings` (--set) added to every run as grid-wide settings (later gin
  bindings win; a run that does not read one leaves it alone), except the ones a run fixes
  (an LM adaptation stage keeps the step count its checkpoint is named by)."""
  runs = tuple(dataclasses.replace(r, grid_bindings=r.grid_bindings + tuple(
      (k, v) for k, v in bindings if k not in r.fixed)) for r in cell.runs)
  return dataclasses.replace(cell, runs=runs)
