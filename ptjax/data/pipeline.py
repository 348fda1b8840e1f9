"""Batches for the trainer: seqio task -> EncDecFeatureConverter (no packing) -> numpy.

Every host builds the same global batch stream from the same seed and keeps its own
rows, so an N-host run sees exactly the batches of a 1-host run and a resumed run
continues where it stopped (`skip_batches`).
"""

from typing import Iterator, Mapping, Optional

import numpy as np
import seqio


def get_task(name: str):
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    known = sorted(seqio.TaskRegistry.names())
    raise ValueError(
        f"Unknown task {name!r}: not registered with seqio. Import the module that registers "
        f"it (e.g. --gin.MIXTURE_OR_TASK_MODULE) or define a TSV/JSONL task; "
        f"{len(known)} registered, e.g. {known[:5]}.") from None


def batches(task_name: str, feature_lengths: Mapping[str, int], split: str, batch_size: int,
            *, shuffle: bool = True, seed: int = 0, repeat: bool = True, pack: bool = False,
            skip_batches: int = 0, host_index: int = 0, host_count: int = 1,
            drop_remainder: bool = True, max_examples: Optional[int] = None,
            ) -> Iterator[dict[str, np.ndarray]]:
  """Iterator over this host's rows [batch_size // host_count, ...] of each global batch.

  Arguments are checked now, not at the first `next`.
  """
  if pack:
    raise ValueError("Packing is not supported with prompt tuning: a prompt is prepended to "
                     "each example, so packed examples would share and misplace it. Set "
                     "pack=False (EncDecFeatureConverter(pack=False)).")
  if batch_size % host_count:
    raise ValueError(f"BATCH_SIZE={batch_size} must be divisible by the {host_count} hosts.")
  task = get_task(task_name)
  ds = seqio.get_dataset(
      task.name, task_feature_lengths=dict(feature_lengths), dataset_split=split,
      shuffle=shuffle, num_epochs=None if repeat else 1, seed=seed, use_cached=False,
      feature_converter=seqio.EncDecFeatureConverter(pack=False))
  if max_examples is not None:
    ds = ds.take(max_examples)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder).skip(skip_batches)
  local = batch_size // host_count
  return ({k: v[host_index * local:(host_index + 1) * local] for k, v in batch.items()}
          for batch in ds.as_numpy_iterator())
