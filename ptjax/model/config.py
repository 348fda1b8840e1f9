"""T5 hyper-parameters and the T5 1.1 presets.

Field names follow T5X's `network.T5Config` so gin files read the same; the two
relative-position fields are configurable here (T5X hard-codes 32 / 128).
"""

import dataclasses
from typing import Sequence

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Shapes and numerics of an encoder-decoder T5.

  Attributes:
    vocab_size: rows of the token embedding (32128 for the T5 vocab + 100 extra ids).
    emb_dim: model width d.
    num_heads: attention heads.
    head_dim: per-head width; `num_heads * head_dim` need not equal `emb_dim`.
    mlp_dim: hidden width of the feed-forward block.
    num_encoder_layers / num_decoder_layers: depth of each stack.
    relative_attention_num_buckets / relative_attention_max_distance: T5 relative
      position buckets (one learned [heads, buckets] table per stack).
    mlp_activations: ('gelu', 'linear') is T5 1.1's gated-GELU; ('relu',) is T5 1.0.
    logits_via_embedding: T5 1.0 ties the output layer to the embedding and scales
      logits by 1/sqrt(emb_dim); T5 1.1 has an untied `logits_dense`.
    dropout_rate: T5X's single rate, applied after the embedding, inside and after
      each sub-block, on attention weights and after the final norm. 0 disables.
    dtype: activation dtype ('float32' on CPU, 'bfloat16' on accelerators); params
      are always float32. Attention biases, logits + bias, softmax and RMSNorm stay
      float32 whatever this is (see `layers`), so masks never meet a half dtype.
      'float16' is refused: its range (max 65504) is too small for T5 1.1's
      feed-forward activations, which exceed it in pre-trained checkpoints (the T5
      authors ran every experiment in bfloat16; HF transformers #5651 / #9295 record
      the overflow in `wo`), and the usual patches (clamping to 65504 - 1000, a float32
      `wo`) change results without making them trustworthy. bfloat16 costs the same
      memory and keeps float32's range. Measured on padded batches of the shipped
      mini model (tests/model/test_half_precision.py): bfloat16 logits within 0.1 of
      float32, greedy tokens and rank choices identical.
    float32_attention_logits: compute q.k in float32 (bias and softmax are float32
      either way).
    layer_norm_epsilon: RMSNorm epsilon.
    remat_policy: 'none', 'full' (recompute every layer in the backward pass) or
      'minimal' (save matmul outputs only); same parameter tree either way. With
      `scan_layers` it applies to the scanned layer (`nn.remat` inside `nn.scan`).
    scan_layers: run each stack as one `nn.scan` over its layers (T5X's scalable T5 /
      flaxformer's `scan_layers=True`): compile time stops growing with depth, same
      maths. The parameter tree changes to flaxformer's scanned layout,
      `encoder/encoder/<one layer>` and `decoder/decoder/<one layer>`, every leaf with a
      stacked 'layers' axis at position 1 (kernel [embed, layers, joined_kv], scale
      [embed, layers]); the shared relative-position tables stay where they were.
      `ptjax.checkpoints.layout` converts checkpoints between the two layouts.
  """

  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  mlp_activations: Sequence[str] = ("gelu", "linear")
  logits_via_embedding: bool = False
  dropout_rate: float = 0.0
  dtype: str = "float32"
  float32_attention_logits: bool = True
  layer_norm_epsilon: float = 1e-6
  remat_policy: str = "none"
  scan_layers: bool = False

  def __post_init__(self):
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for act in self.mlp_activations:
      if act not in ACTIVATIONS:
        raise ValueError(
            f"T5Config.mlp_activations: unknown activation {act!r}; "
            f"choose from {sorted(ACTIVATIONS)}.")
    if self.remat_policy not in ("none", "full", "minimal"):
      raise ValueError(
          f"T5Config.remat_policy={self.remat_policy!r}; use 'none', 'full' or 'minimal'.")
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"SCAN_LAYERS (T5Config.scan_layers)={self.scan_layers!r} must be True or "
                       f"False.")
    try:
      dtype = jnp.dtype(self.dtype)
    except TypeError:
      raise ValueError(f"T5Config.dtype={self.dtype!r} is not a dtype; use 'float32' (CPU) "
                       f"or 'bfloat16' (TPU / GPU).") from None
    if dtype == jnp.float16:
      raise ValueError(FLOAT16_REFUSAL)
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"DROPOUT_RATE={self.dropout_rate!r} must be in [0, 1).")

  @property
  def activation_dtype(self):
    return jnp.dtype(self.dtype)

  def replace(self, **changes) -> "T5Config":
    return dataclasses.replace(self, **changes)


FLOAT16_REFUSAL = ("T5Config.dtype='float16': float16 overflows T5 1.1's feed-forward "
                   "activations; use 'bfloat16' (same memory, float32's range).")

# Names T5X uses in `mlp_activations`; 'gelu' is the tanh approximation (T5 1.1).
ACTIVATIONS = ("gelu", "relu", "linear", "silu", "swish")


def _t5_1_1(emb_dim, num_heads, mlp_dim, num_layers, head_dim=64):
  return T5Config(
      emb_dim=emb_dim, num_heads=num_heads, head_dim=head_dim, mlp_dim=mlp_dim,
      num_encoder_layers=num_layers, num_decoder_layers=num_layers)


PRESETS = {
    # T5X's own test model (t5x/testdata/test_t5_tiny): fast enough for unit tests.
    "tiny": T5Config(emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                     num_encoder_layers=2, num_decoder_layers=2),
    "small": _t5_1_1(512, 6, 1024, 8),
    "base": _t5_1_1(768, 12, 2048, 12),
    "large": _t5_1_1(1024, 16, 2816, 24),
    "xl": _t5_1_1(2048, 32, 5120, 24),
    "xxl": _t5_1_1(4096, 64, 10240, 24),
    # The mini-world ladder (gin/models/t5_1_1_mini_*.gin): ptjax's own SentencePiece
    # vocabulary (1,100 ids, padded to 1,152 like T5's 32,100 -> 32,128).
    "mini_small": _t5_1_1(48, 4, 128, 2, head_dim=12).replace(vocab_size=1152),
    "mini_base": _t5_1_1(64, 4, 192, 4, head_dim=16).replace(vocab_size=1152),
    "mini_large": _t5_1_1(128, 4, 320, 4, head_dim=32).replace(vocab_size=1152),
    "mini_xl": _t5_1_1(192, 6, 448, 5, head_dim=32).replace(vocab_size=1152),
}


def preset(name: str, **overrides) -> T5Config:
  """Returns a T5 1.1 preset (`tiny`, `small`, `base`, `large`, `xl`, `xxl`)."""
  if name not in PRESETS:
    raise ValueError(f"Unknown T5 preset {name!r}; choose from {sorted(PRESETS)}.")
  return PRESETS[name].replace(**overrides)
