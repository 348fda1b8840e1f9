"""T5X and google-research/prompt-tuning names, and what each is in ptjax.

Every row is one name a T5X / prompt-tuning user may write (a macro, a configurable
parameter, a flag): 'same' works in ptjax with T5X's meaning (differences in the note);
'maps' is refused with ptjax's name for the same thing; 'error' has no equivalent and is
refused with the reason. `gin_utils` uses `hint` for names a run does not read or gin does
not know, and `refused` for names ptjax has but must not be set that way.
docs/coming_from_t5x.md shows this table (a test keeps the two equal).
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Name:
  t5x: str
  status: str  # 'same' | 'maps' | 'error'
  ptjax: str
  note: str = ""


_SIZE = "pick gin/models/t5_1_1_<size>.gin, or bind config.T5Config.{}"

TABLE = (
    # Macros of t5x/configs/runs/{finetune,eval,infer}.gin and prompt-tuning's configs.
    Name("MODEL_DIR", "same", "MODEL_DIR"),
    Name("MIXTURE_OR_TASK_NAME", "same", "MIXTURE_OR_TASK_NAME"),
    Name("MIXTURE_OR_TASK_MODULE", "same", "MIXTURE_OR_TASK_MODULE",
         "imported before the task is looked up; ptjax's own tasks stay registered"),
    Name("TASK_FEATURE_LENGTHS", "same", "TASK_FEATURE_LENGTHS",
         "the prompt's positions come on top of 'inputs'"),
    Name("TRAIN_STEPS", "same", "TRAIN_STEPS",
         "absolute: checkpoint_1100000 + TRAIN_STEPS=1_150_000 trains 50,000 steps"),
    Name("TRAIN_STEPS_RELATIVE", "same", "TRAIN_STEPS_RELATIVE",
         "differs: counted from the initial checkpoint's step, so a resumed run ends where "
         "an uninterrupted one does (T5X counts from the step it restarted at)"),
    Name("INITIAL_CHECKPOINT_PATH", "same", "INITIAL_CHECKPOINT_PATH",
         "T5X or Hugging Face checkpoint, local or gs://; eval and infer read it too"),
    Name("BATCH_SIZE", "same", "BATCH_SIZE"),
    Name("EVAL_PERIOD", "same", "EVAL_PERIOD"),
    Name("DROPOUT_RATE", "same", "DROPOUT_RATE"),
    Name("ACTIVATION_DTYPE", "same", "ACTIVATION_DTYPE"),
    Name("RANDOM_SEED", "same", "RANDOM_SEED",
         "differs: default 0 (reproducible); None draws a seed and prints it"),
    Name("USE_CACHED_TASKS", "same", "USE_CACHED_TASKS",
         "differs: default False (ptjax's tasks have no offline cache)"),
    Name("Z_LOSS", "same", "Z_LOSS"),
    Name("LABEL_SMOOTHING", "same", "LABEL_SMOOTHING"),
    Name("LOSS_NORMALIZING_FACTOR", "same", "LOSS_NORMALIZING_FACTOR",
         "None only (summed loss, as prompt-tuning's configs); other values are refused"),
    Name("VOCABULARY", "same", "VOCABULARY"),
    Name("PROMPT_LENGTH", "same", "PROMPT_LENGTH"),
    Name("CLASS_LABELS", "same", "CLASS_LABELS",
         "also the label words RANK_CLASSIFICATION ranks for your own tasks"),
    Name("PROMPT_FILE", "same", "PROMPT_FILE",
         "also a PEFT adapter folder or a ptjax run"),
    Name("EVAL_STEPS", "maps", "MAX_EVAL_EXAMPLES",
         "ptjax evaluates loss and metrics in one pass over the split; limit it with "
         "MAX_EVAL_EXAMPLES"),
    Name("EVALUATOR_NUM_EXAMPLES", "maps", "MAX_EVAL_EXAMPLES"),
    Name("CHECKPOINT_PATH", "maps", "INITIAL_CHECKPOINT_PATH",
         "eval / infer read the frozen model from INITIAL_CHECKPOINT_PATH and the prompt "
         "from PROMPT_FILE"),
    Name("EVAL_OUTPUT_DIR", "maps", "MODEL_DIR", "eval writes MODEL_DIR/eval/<task>/"),
    Name("INFER_OUTPUT_DIR", "maps", "MODEL_DIR", "infer writes MODEL_DIR/infer/<task>/"),
    Name("PROMPT_REGEX", "maps", "TRAINABLE", "regexes over 'collection/path'"),
    Name("PROMPT", "maps", "PROMPT_INIT", "or include one of gin/prompts/*.gin"),
    Name("ARCHITECTURE", "maps", "MODEL_CONFIG", "set by gin/models/*.gin"),
    Name("MODEL", "maps", "MODEL_CONFIG", "set by gin/models/*.gin"),
    Name("SEED", "maps", "RANDOM_SEED", "ptjax's earlier name"),
    Name("NUM_HEADS", "maps", "config.T5Config.num_heads", _SIZE.format("num_heads")),
    Name("NUM_ENCODER_LAYERS", "maps", "config.T5Config.num_encoder_layers",
         _SIZE.format("num_encoder_layers")),
    Name("NUM_DECODER_LAYERS", "maps", "config.T5Config.num_decoder_layers",
         _SIZE.format("num_decoder_layers")),
    Name("HEAD_DIM", "maps", "config.T5Config.head_dim", _SIZE.format("head_dim")),
    Name("EMBED_DIM", "maps", "config.T5Config.emb_dim", _SIZE.format("emb_dim")),
    Name("MLP_DIM", "maps", "config.T5Config.mlp_dim", _SIZE.format("mlp_dim")),
    Name("NUM_EMBEDDINGS", "maps", "config.T5Config.vocab_size", _SIZE.format("vocab_size")),
    Name("USE_HARDWARE_RNG", "error", "",
         "ptjax draws dropout masks with JAX's default PRNG; remove it"),
    Name("EVALUATOR_USE_MEMORY_CACHE", "error", "",
         "ptjax keeps the evaluation examples in memory always; remove it"),
    Name("JSON_WRITE_N_RESULTS", "error", "",
         "ptjax writes every prediction to MODEL_DIR/eval/<task>/step_<n>.jsonl; remove it"),
    Name("MIXTURE_OR_TASK_SPLIT", "maps", "EVAL_SPLIT",
         "infer.gin's split (T5X's default 'test', ptjax's 'validation'; "
         "gin/tasks/infer_file.gin: your inputs)"),
    # Decoding (T5X: the model's decode_fn and its options; ptjax: gin/decoding/*.gin).
    Name("models.EncoderDecoderModel.decode_fn", "maps", "DECODING_METHOD",
         "'greedy', 'beam_search' or 'temperature_sample', or include one of "
         "gin/decoding/*.gin"),
    Name("models.EncoderDecoderModel.predict_batch_with_aux.num_decodes", "maps", "BEAM_SIZE",
         "beam search's beams; ptjax's sampling draws one sample per input"),
    Name("decoding.beam_search.alpha", "maps", "BEAM_ALPHA",
         "the brevity penalty, T5X's default 0.6 (gin/decoding/beam_search.gin)"),
    Name("decoding.temperature_sample.temperature", "maps", "TEMPERATURE",
         "with DECODING_METHOD='temperature_sample' (gin/decoding/temperature.gin)"),
    Name("decoding.temperature_sample.topk", "maps", "TOPK",
         "differs: default 0 = no cut (T5X: 1)"),
    Name("decoding.temperature_sample.topp", "maps", "TOPP",
         "gin/decoding/nucleus_sampling.gin"),
    Name("inference.generate", "maps", "DECODING_METHOD",
         "the runs call it with the decoding macros: DECODING_METHOD, BEAM_SIZE, BEAM_ALPHA, "
         "TEMPERATURE, TOPK, TOPP, MAX_DECODE_LENGTH, DECODING_SEED (gin/decoding/*.gin)"),
    # Configurables of t5x.utils / partitioning / trainer.
    Name("utils.DatasetConfig.mixture_or_task_name", "same",
         "utils.DatasetConfig.mixture_or_task_name",
         "scopes as T5X: train/, train_eval/; eval and infer unscoped"),
    Name("utils.DatasetConfig.task_feature_lengths", "same",
         "utils.DatasetConfig.task_feature_lengths"),
    Name("utils.DatasetConfig.split", "same", "utils.DatasetConfig.split"),
    Name("utils.DatasetConfig.batch_size", "same", "utils.DatasetConfig.batch_size"),
    Name("utils.DatasetConfig.shuffle", "same", "utils.DatasetConfig.shuffle"),
    Name("utils.DatasetConfig.seed", "same", "utils.DatasetConfig.seed",
         "differs: None = RANDOM_SEED (resumes see the same batches), not a new seed"),
    Name("utils.DatasetConfig.use_cached", "same", "utils.DatasetConfig.use_cached"),
    Name("utils.DatasetConfig.pack", "same", "utils.DatasetConfig.pack",
         "False only: a prompt is prepended to every example"),
    Name("utils.DatasetConfig.module", "same", "utils.DatasetConfig.module"),
    Name("utils.DatasetConfig.use_custom_packing_ops", "error", "",
         "packing is refused with prompt tuning; remove it"),
    Name("utils.SaveCheckpointConfig.period", "same", "utils.SaveCheckpointConfig.period",
         "= SAVING_PERIOD"),
    Name("utils.SaveCheckpointConfig.keep", "same", "utils.SaveCheckpointConfig.keep",
         "differs: default 3 (T5X: None = all); run checkpoints hold only what trains"),
    Name("utils.SaveCheckpointConfig.dtype", "same", "utils.SaveCheckpointConfig.dtype",
         "'float32' only"),
    Name("utils.SaveCheckpointConfig.save_dataset", "error", "",
         "ptjax's run checkpoints always hold the data position; remove it"),
    Name("utils.SaveCheckpointConfig.checkpointer_cls", "error", "",
         "ptjax's run checkpoints hold only what trains (prompt-tuning's Checkpointer "
         "behaviour); remove it"),
    Name("utils.RestoreCheckpointConfig.path", "same", "utils.RestoreCheckpointConfig.path",
         "= INITIAL_CHECKPOINT_PATH"),
    Name("utils.RestoreCheckpointConfig.mode", "same", "utils.RestoreCheckpointConfig.mode",
         "'specific' only"),
    Name("utils.RestoreCheckpointConfig.dtype", "same", "utils.RestoreCheckpointConfig.dtype",
         "= FROZEN_DTYPE, the frozen weights' dtype on the devices ('float32' or "
         "'bfloat16'); differs: what trains stays float32 (T5X trains in this dtype)"),
    Name("utils.RestoreCheckpointConfig.assignment_map", "error", "",
         "ptjax restores only the frozen model from INITIAL_CHECKPOINT_PATH; the prompt is new "
         "(PROMPT_INIT) or PROMPT_FILE; remove it"),
    Name("utils.RestoreCheckpointConfig.fallback_to_scratch", "error", "",
         "ptjax restores only the frozen model; the prompt is always new or PROMPT_FILE; "
         "remove it"),
    Name("partitioning.PjitPartitioner.num_partitions", "same",
         "partitioning.PjitPartitioner.num_partitions", "= NUM_PARTITIONS"),
    Name("partitioning.PjitPartitioner.model_parallel_submesh", "same",
         "partitioning.PjitPartitioner.model_parallel_submesh",
         "differs: its product is the model-parallel size; devices in jax.devices() order"),
    Name("partitioning.PjitPartitioner.logical_axis_rules", "error", "",
         "ptjax's rules are T5X's standard ones plus the prompt's; remove it"),
    Name("trainer.Trainer.num_microbatches", "same", "trainer.Trainer.num_microbatches"),
    Name("trainer.Trainer.learning_rate_fn", "maps", "LEARNING_RATE",
         "ptjax's learning rate is constant, as the paper's"),
    Name("utils.create_learning_rate_scheduler.base_learning_rate", "maps", "LEARNING_RATE"),
    Name("utils.create_learning_rate_scheduler", "maps", "LEARNING_RATE",
         "a constant rate, as the paper's; no warm-up or decay factors"),
    Name("adafactor.Adafactor", "maps", "optim.paper_adafactor",
         "same parameter names: decay_rate, weight_decay_rate, multiply_by_parameter_scale, "
         "clipping_threshold"),
    Name("prompts.Prompt.length", "maps", "PROMPT_LENGTH"),
    Name("prompts.Prompt", "maps", "PROMPT_INIT", "or include one of gin/prompts/*.gin"),
    # Settings ptjax has that must not be set this way.
    Name("optim.paper_adafactor.learning_rate", "maps", "LEARNING_RATE",
         "the trainer passes LEARNING_RATE (or the method's default) to the optimizer"),
    # Flags of t5x.train / t5x.eval.
    Name("--gin_file", "same", "--gin_file", "ptjax's files are found from any folder"),
    Name("--gin_bindings / --gin.NAME=VALUE", "same", "--gin_bindings / --gin.NAME=VALUE"),
    Name("--gin_search_paths", "same", "--gin_search_paths",
         "not needed for ptjax's own files"),
    Name("--tfds_data_dir", "same", "--tfds_data_dir"),
)

_BY_NAME = {n.t5x: n for n in TABLE}


def _lookup(name: str) -> Optional[Name]:
  bare = name.split("/")[-1] if "." in name.split("/")[-1] else name
  for candidate in (name, bare, bare.rsplit(".", 1)[0] if "." in bare else None):
    if candidate in _BY_NAME:
      return _BY_NAME[candidate]
  return None


def hint(name: str) -> Optional[str]:
  """What to write instead of `name` (a macro, `configurable.param` or configurable), or
  None when the table has nothing to say."""
  row = _lookup(name)
  if row is None or row.status == "same":
    return None
  if row.status == "maps":
    return f"ptjax's name is {row.ptjax}" + (f" ({row.note})" if row.note else "")
  return row.note


# Names ptjax has (its own wiring) that a user's setting would bypass.
_REFUSED = ("optim.paper_adafactor.learning_rate", "PROMPT")


def refused(name: str) -> Optional[str]:
  """The fix, when `name` exists in ptjax but is not to be set directly."""
  return hint(name) if name.split("/")[-1] in _REFUSED else None


def counts() -> dict:
  """How many names work as in T5X, map to a ptjax name, or are refused."""
  out = {"same": 0, "maps": 0, "error": 0}
  for row in TABLE:
    out[row.status] += 1
  return out
