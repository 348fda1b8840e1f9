"""Batches for the trainer: seqio task -> EncDecFeatureConverter (no packing) -> numpy.

Every host builds the same global batch stream from the same seed and keeps its own
rows, so an N-host run sees exactly the batches of a 1-host run and a resumed run
continues where it stopped (`skip_batches`).
"""

from typing import Iterator, Mapping, Optional

import numpy as np
import seqio

from ptjax import files
from ptjax.data import catalog, vocabularies


def get_task(name: str):
  """The registered task or mixture (an official T5 / prompt-tuning name that no module
  registered resolves to ptjax's equivalent: `catalog.ALIASES`); one-line ValueError when
  unknown or when its vocabulary file is missing."""
  try:
    task = seqio.get_mixture_or_task(catalog.resolve(name))
  except ValueError:
    known = sorted(seqio.TaskRegistry.names())
    raise ValueError(
        f"Unknown task {name!r}: not registered with seqio. Import the module that registers "
        f"it (e.g. --gin.MIXTURE_OR_TASK_MODULE) or define a TSV/JSONL task; "
        f"{len(known)} registered, e.g. {known[:5]}.") from None
  for t in getattr(task, "tasks", [task]):
    for feature in t.output_features.values():
      path = getattr(feature.vocabulary, "sentencepiece_model_file", None)
      if path:
        vocabularies.check_path(path)
        if files.is_remote(path):  # Read now: failing inside tf.data's trace is 100 lines.
          feature.vocabulary.sp_model  # noqa: B018  # Cached by seqio for the pipeline.
  return task


def refuse_packing(pack: bool) -> None:
  if pack:
    raise ValueError("Packing is not supported with prompt tuning: a prompt is prepended to "
                     "each example, so packed examples would share and misplace it. Set "
                     "pack=False (EncDecFeatureConverter(pack=False)).")


def batches(task_name: str, feature_lengths: Mapping[str, int], split: str, batch_size: int,
            *, shuffle: bool = True, seed: int = 0, repeat: bool = True, pack: bool = False,
            skip_batches: int = 0, host_index: int = 0, host_count: int = 1,
            drop_remainder: bool = True, max_examples: Optional[int] = None,
            use_cached: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Iterator over this host's rows [batch_size // host_count, ...] of each global batch.

  `use_cached`: read seqio's offline cache of the task (T5X's USE_CACHED_TASKS).
  Arguments are checked now, not at the first `next`.
  """
  refuse_packing(pack)
  if not isinstance(batch_size, int) or batch_size <= 0:
    raise ValueError(f"BATCH_SIZE={batch_size!r} must be a positive integer.")
  if batch_size % host_count:
    raise ValueError(f"BATCH_SIZE={batch_size} must be divisible by the {host_count} hosts.")
  task = get_task(task_name)
  uncached = [t.name for t in getattr(task, "tasks", [task]) if t.cache_dir is None]
  if use_cached and uncached:
    raise ValueError(f"USE_CACHED_TASKS=True, but {', '.join(uncached)} has no offline cache "
                     f"(seqio's cache_tasks_main writes one); set USE_CACHED_TASKS=False.")
  # try_in_mem_cache=False: seqio would ask TFDS for split sizes, unknown under mock data.
  ds = task.get_dataset(dict(feature_lengths), split=split, shuffle=shuffle,
                        num_epochs=None if repeat else 1, seed=seed, use_cached=use_cached,
                        try_in_mem_cache=False)
  ds = seqio.EncDecFeatureConverter(pack=False)(ds, dict(feature_lengths))
  if max_examples is not None:
    ds = ds.take(max_examples)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder).skip(skip_batches)
  local = batch_size // host_count
  return ({k: v[host_index * local:(host_index + 1) * local] for k, v in batch.items()}
          for batch in ds.as_numpy_iterator())


def eval_examples(task_name: str, feature_lengths: Mapping[str, int], split: str,
                  max_examples: Optional[int] = None) -> list[dict]:
  """The split's preprocessed examples in order, as numpy dicts (token ids trimmed to
  `feature_lengths`, with EOS, plus every raw field the postprocessors and metrics need)."""
  ds = get_task(task_name).get_dataset(dict(feature_lengths), split=split, shuffle=False,
                                       num_epochs=1, use_cached=False, try_in_mem_cache=False)
  if max_examples is not None:
    ds = ds.take(max_examples)
  return list(ds.as_numpy_iterator())


def encdec_batch(examples: list[dict], feature_lengths: Mapping[str, int],
                 rows: Optional[int] = None) -> dict[str, np.ndarray]:
  """Examples -> EncDecFeatureConverter-style arrays, zero-padded to `rows` (no packing).

  Padding rows are all zero: no loss weight, ignored by decoding."""
  rows = rows or len(examples)
  n_in, n_out = feature_lengths["inputs"], feature_lengths["targets"]
  inputs = np.zeros((rows, n_in), np.int32)
  targets = np.zeros((rows, n_out), np.int32)
  for i, ex in enumerate(examples):
    x, y = ex["inputs"][:n_in], ex["targets"][:n_out]
    inputs[i, :len(x)], targets[i, :len(y)] = x, y
  decoder_inputs = np.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  return {"encoder_input_tokens": inputs, "decoder_target_tokens": targets,
          "decoder_input_tokens": decoder_inputs,
          "decoder_loss_weights": (targets > 0).astype(np.int32)}
