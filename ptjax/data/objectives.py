"""Pre-training objectives over token sequences: T5's span corruption and the prefix-LM
("LM adaptation") objective, as seqio preprocessors; plus the paper's "+ sentinel" ablation.

Span corruption: a fraction `noise_density` of each segment's tokens, in spans of mean
length `mean_noise_span_length`, is replaced in the inputs by sentinels (extra_id_0,
extra_id_1, ... = vocab_size - 1, vocab_size - 2, ...) and the targets list each sentinel
followed by the tokens it hid. The number of noise tokens is round(length * density)
exactly, so the density is deterministic; only the span positions are random.
"""

import seqio
import tensorflow as tf


def segment_lengths(inputs_length: int, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> tuple[int, int]:
  """(raw tokens per segment, targets length) so that corrupted inputs, with one sentinel
  per span and EOS, fit `inputs_length` exactly (T5's random_spans_helper)."""
  def lengths(tokens):
    noise = int(round(tokens * noise_density))
    spans = max(1, int(round(noise / mean_noise_span_length)))
    return tokens - noise + spans + 1, noise + spans + 1

  tokens = inputs_length
  while lengths(tokens + 1)[0] <= inputs_length:
    tokens += 1
  return tokens, lengths(tokens)[1]


def _random_segmentation(num_items, num_segments, seed):
  """Random lengths (each >= 1) of `num_segments` segments summing to `num_items`."""
  first_in_segment = tf.pad(
      tf.random.experimental.stateless_shuffle(
          tf.cast(tf.range(num_items - 1) < num_segments - 1, tf.int32), seed),
      [[1, 0]])
  segment_id = tf.cumsum(first_in_segment)
  return tf.math.segment_sum(tf.ones_like(segment_id), segment_id)


def random_spans_noise_mask(length, noise_density: float, seeds,
                            mean_noise_span_length: float = 3.0):
  """Boolean [length]: round(length * noise_density) noise tokens in alternating
  non-noise / noise spans (starting with non-noise)."""
  length_f = tf.cast(length, tf.float32)
  num_noise = tf.cast(tf.round(length_f * noise_density), tf.int32)
  num_noise = tf.clip_by_value(num_noise, 1, length - 1)
  num_spans = tf.maximum(tf.cast(tf.round(tf.cast(num_noise, tf.float32)
                                          / mean_noise_span_length), tf.int32), 1)
  noise_lengths = _random_segmentation(num_noise, num_spans, seeds[0])
  nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, seeds[1])
  interleaved = tf.reshape(tf.stack([nonnoise_lengths, noise_lengths], axis=1), [-1])
  span_starts = tf.cumsum(interleaved)[:-1]
  span_start_indicator = tf.math.unsorted_segment_sum(
      tf.ones_like(span_starts), span_starts, length)
  span_num = tf.cumsum(span_start_indicator)
  return tf.equal(span_num % 2, 1)


def _spans_to_sentinels(tokens, mask, vocab_size):
  """Each run of `mask` becomes one sentinel (vocab_size-1, -2, ...); other tokens stay."""
  previous = tf.pad(mask[:-1], [[1, 0]])
  first = mask & ~previous
  sentinel = vocab_size - tf.cumsum(tf.cast(first, tokens.dtype))
  tokens = tf.where(first, sentinel, tokens)
  return tf.boolean_mask(tokens, ~(mask & ~first))


@seqio.map_over_dataset(num_seeds=2)
def _corrupt(x, seeds, vocab_size, noise_density, mean_noise_span_length):
  tokens = x["targets"]
  mask = random_spans_noise_mask(tf.size(tokens), noise_density, seeds,
                                 mean_noise_span_length)
  return {**x, "inputs": _spans_to_sentinels(tokens, mask, vocab_size),
          "targets": _spans_to_sentinels(tokens, ~mask, vocab_size)}


def span_corruption(dataset, sequence_length, output_features, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0):
  """Tokenized text in 'targets' -> span-corrupted ('inputs', 'targets') segments.

  Concatenates documents, splits them into segments whose corruption fits
  sequence_length['inputs'], then corrupts each segment. Add EOS after this step.
  """
  vocab_size = output_features["targets"].vocabulary.vocab_size
  tokens, _ = segment_lengths(sequence_length["inputs"], noise_density, mean_noise_span_length)
  dataset = _split_into_segments(dataset, tokens)
  return _corrupt(dataset, vocab_size=vocab_size, noise_density=noise_density,
                  mean_noise_span_length=mean_noise_span_length)


def _split_into_segments(dataset, segment_length: int, across_documents: bool = True):
  """Cuts 'targets' into segments: of the concatenated stream (span corruption, like T5's
  reduce_concat_tokens) or of each document alone (prefix LM)."""
  if across_documents:
    flat = dataset.flat_map(lambda x: tf.data.Dataset.from_tensor_slices(x["targets"]))
    segments = flat.batch(segment_length)
  else:
    segments = dataset.flat_map(
        lambda x: tf.data.Dataset.from_tensor_slices(x["targets"]).batch(segment_length))
  segments = segments.map(lambda t: {"targets": t})
  return segments.filter(lambda x: tf.size(x["targets"]) >= 2)  # Nothing to split in 1.


@seqio.map_over_dataset(num_seeds=1)
def _split_prefix(x, seed):
  tokens = x["targets"]
  n = tf.size(tokens)
  split = tf.random.stateless_uniform([], seed, minval=1, maxval=tf.maximum(n, 2),
                                      dtype=tf.int32)
  return {**x, "inputs": tokens[:split], "targets": tokens[split:]}


def prefix_lm(dataset, sequence_length, output_features):
  """LM adaptation: each segment of inputs+targets length is split at a random point
  into a prefix ('inputs') and its continuation ('targets')."""
  del output_features
  segment = sequence_length["inputs"] + sequence_length["targets"]
  dataset = _split_into_segments(dataset, segment, across_documents=False)
  return _split_prefix(dataset)


def add_sentinel(x, vocab_size: int):
  """The paper's "span corruption + sentinel": downstream targets start with extra_id_0
  (and inputs end with it), so they look like span-corruption targets."""
  sentinel = tf.constant([vocab_size - 1], x["targets"].dtype)
  return {**x, "inputs": tf.concat([x["inputs"], sentinel], 0),
          "targets": tf.concat([sentinel, x["targets"]], 0)}

