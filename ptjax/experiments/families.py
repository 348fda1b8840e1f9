"""Families of experiments: the models, tasks and recipe a grid is expanded with.

  t5    the paper's: T5 1.1 (LM-adapted 100K) small..xxl from gs://t5-data, SuperGLUE,
        SQuAD -> MRQA, QQP <-> MRPC (TFDS); for TPU / GPU hosts.
  mini  the mini-world ladder (gin/models/t5_1_1_mini_*.gin, ./scripts/pretrain_mini.sh)
        on the mini tasks: the same grids offline on a CPU.
"""

import dataclasses
import os
from typing import Callable

from ptjax import assets


@dataclasses.dataclass(frozen=True)
class Family:
  """Models, tasks and recipe of one family of experiments."""
  name: str
  sizes: tuple[str, ...]
  model_gin: str  # '{size}' filled in.
  lm_adapted: Callable[[str], str]  # size -> the frozen model of the paper (checkpoint).
  span_corruption: Callable[[str], str]  # size -> the checkpoint before LM adaptation.
  span_corruption_step: int  # Its step (T5X: absolute steps go on from it).
  make_checkpoint: Callable[[str], str]  # size -> the command that makes those two.
  superglue: tuple[str, ...]  # Tasks of Figure 1 / 3 (taskless variants).
  # Tables 1-2 evaluate mixtures of the training task (in domain; checkpoints are chosen on
  # it) and the zero-shot targets.
  squad: tuple[str, str]  # (train task, eval mixture) of Table 1.
  paraphrase: tuple[tuple[str, str, str], ...]  # (name, train task, eval mixture) of Table 2.
  adaptation: tuple[str, dict, tuple[int, ...], int]  # Fig 3d: task, lengths, steps, full.
  recipe: tuple[tuple[str, str], ...]  # Bindings of every prompt/model tuning run.
  model_tuning: tuple[tuple[str, str], ...]
  task_bindings: Callable[[str], tuple[tuple[str, str], ...]]  # Per task (lengths, ...).
  table_size: str  # The size of Tables 1-3 (the paper's XXL).
  prompt_length: int  # The default (the paper's 100; mini inputs are ~120 tokens: 20).


def _t5_task_bindings(task: str) -> tuple[tuple[str, str], ...]:
  out = []
  if "wsc" in task:  # Trained on correct referents only; evaluated on every candidate.
    out.append(("train_eval/utils.DatasetConfig.mixture_or_task_name",
                repr(task.replace("simple_train", "simple_eval"))))
  if "record" in task or "squad" in task:
    out.append(("TASK_FEATURE_LENGTHS", "{'inputs': 512, 'targets': 32}"))
  return tuple(out)


T5 = Family(
    name="t5", sizes=("small", "base", "large", "xl", "xxl"),
    model_gin="models/t5_1_1_{size}.gin",
    lm_adapted=lambda s: f"gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_{s}/"
                         "checkpoint_1100000",
    span_corruption=lambda s: f"gs://t5-data/pretrained_models/t5x/t5_1_1_{s}/"
                              "checkpoint_1000000",
    span_corruption_step=1_000_000,
    make_checkpoint=lambda s: "public T5X checkpoints (gs://t5-data); no step needed",
    superglue=tuple(f"pt_super_glue_{t}_v102_taskless" for t in (
        "boolq", "cb", "copa", "multirc", "record", "rte", "wic")) +
    ("pt_super_glue_wsc_v102_simple_train_taskless",),
    squad=("pt_squad_v110_taskless", "pt_squad_to_mrqa_taskless"),
    paraphrase=(
        ("qqp_to_mrpc", "pt_glue_qqp_v002_taskless",
         "pt_glue_mrpc_from_qqp_zeroshot_v002_taskless"),
        ("mrpc_to_qqp", "pt_glue_mrpc_v002_taskless",
         "pt_glue_qqp_from_mrpc_zeroshot_v002_taskless")),
    adaptation=("pt_c4_prefix_lm", {"inputs": 512, "targets": 512}, (0, 10000, 50000, 100000),
                100000),
    recipe=(("TRAIN_STEPS_RELATIVE", "30000"), ("BATCH_SIZE", "32"), ("EVAL_PERIOD", "1000"),
            ("SAVING_PERIOD", "1000")),
    model_tuning=(("LEARNING_RATE", "0.001"),),
    task_bindings=_t5_task_bindings,
    table_size="xxl", prompt_length=100)


def _pretrain_root() -> str:
  return os.environ.get("PTJAX_PRETRAIN_ROOT", "/tmp/ptjax_pretrain")


def _mini_lm_adapted(size: str) -> str:
  if size == "large":
    return assets.MINI_T5_CHECKPOINT  # Shipped: the same recipe, pre-trained once.
  return os.path.join(_pretrain_root(), f"mini_{size}", "lm_adaptation", "checkpoint_2000")


def _mini_task_bindings(task: str) -> tuple[tuple[str, str], ...]:
  if "squad" in task:
    return (("TASK_FEATURE_LENGTHS", "{'inputs': 160, 'targets': 10}"),
            ("RANK_CLASSIFICATION", "False"))
  if "qqp" in task or "mrpc" in task:  # Transfer reads the source's words: decode.
    # `not_equivalent` is 13 pieces of the mini vocabulary: targets 16 keep labels whole.
    return (("TASK_FEATURE_LENGTHS", "{'inputs': 64, 'targets': 16}"),
            ("RANK_CLASSIFICATION", "False"))
  return (("TASK_FEATURE_LENGTHS", "{'inputs': 160, 'targets': 4}"),
          ("RANK_CLASSIFICATION", "True"))


MINI = Family(
    name="mini", sizes=("small", "base", "large", "xl"),
    model_gin="models/t5_1_1_mini_{size}.gin",
    lm_adapted=_mini_lm_adapted,
    span_corruption=lambda s: os.path.join(_pretrain_root(), f"mini_{s}", "span_corruption",
                                           "checkpoint_1500"),
    span_corruption_step=1500,
    make_checkpoint=lambda s: f"OUT={_pretrain_root()}/mini_{s} ./scripts/pretrain_mini.sh {s}",
    superglue=("pt_mini_boolq_taskless", "pt_mini_cb_taskless", "pt_mini_rte_taskless"),
    squad=("pt_mini_squad_taskless", "pt_mini_squad_to_ood_taskless"),
    paraphrase=(
        ("qqp_to_mrpc", "pt_mini_qqp_taskless", "pt_mini_mrpc_from_qqp_zeroshot_taskless"),
        ("mrpc_to_qqp", "pt_mini_mrpc_taskless", "pt_mini_qqp_from_mrpc_zeroshot_taskless")),
    adaptation=("pt_mini_corpus_prefix_lm", {"inputs": 96, "targets": 64}, (0, 100, 300, 500),
                500),
    recipe=(("TRAIN_STEPS_RELATIVE", "300"), ("BATCH_SIZE", "32"), ("EVAL_PERIOD", "100"),
            ("SAVING_PERIOD", "300"), ("DROPOUT_RATE", "0.0"), ("MAX_EVAL_EXAMPLES", "240")),
    model_tuning=(("LEARNING_RATE", "0.001"), ("TRAIN_STEPS_RELATIVE", "150")),
    task_bindings=_mini_task_bindings,
    table_size="large", prompt_length=20)

FAMILIES = {"t5": T5, "mini": MINI}
