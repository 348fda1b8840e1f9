"""Hugging Face `T5ForConditionalGeneration` folders: config.json + model.safetensors.

HF stores torch Linear weights [out, in] and the relative-position table as
[buckets, heads] inside the first block of each stack; T5X keeps kernels [in, out]
and `relpos_bias/rel_embedding` [heads, buckets]. Both sides hold float values
unchanged, so T5X -> HF -> T5X is bit-identical. Weights load only from
safetensors: pickled `pytorch_model.bin` files are refused.
"""

import json
from typing import Optional

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy
from flax import traverse_util

from ptjax import files
from ptjax.checkpoints.validate import (CheckpointError, check_dtype, check_params, flat,
                                         resolve_dtype)
from ptjax.model import T5Config

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tied copies of `shared.weight` that some exporters also write.
_TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def config_from_hf(hf: dict, source: str = "config.json",
                   has_lm_head: Optional[bool] = None) -> T5Config:
  """HF T5Config dict -> T5Config (activation dtype float32, dropout as stored).

  Tied vs untied output layer: transformers 4 writes `tie_word_embeddings` (False for
  T5 1.1); transformers 5 always writes True, keeps the 1/sqrt(d) logit scaling in
  `scale_decoder_outputs` and unties whenever the file has its own `lm_head.weight`
  (`has_lm_head`). T5X couples the two: tied <=> scaled.
  """
  if hf.get("model_type", "t5") != "t5":
    raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not 't5'.")
  proj = hf.get("feed_forward_proj", "relu")
  gated = proj.startswith("gated-")
  act = proj[len("gated-"):] if gated else proj
  # HF maps 'gated-gelu' to the tanh GELU (T5 1.1); its plain 'gelu' is the exact erf one.
  if act not in ("relu", "gelu") or (act == "gelu" and not gated):
    raise CheckpointError(
        f"{source}: feed_forward_proj={proj!r} is not supported; ptjax runs 'relu' "
        f"(T5 1.0), 'gated-gelu' (T5 1.1) and 'gated-relu'.")
  tied = hf.get("tie_word_embeddings", True)
  scaled = hf.get("scale_decoder_outputs", tied)
  if has_lm_head is not None:
    tied = tied and not has_lm_head
  if tied != scaled:
    raise CheckpointError(
        f"{source}: {'a tied' if tied else 'an untied'} output layer "
        f"{'without' if tied else 'with'} 1/sqrt(d_model) logit scaling has no T5X "
        f"equivalent (T5 1.0 is tied and scaled, T5 1.1 untied and unscaled).")
  return T5Config(
      vocab_size=hf["vocab_size"], emb_dim=hf["d_model"], num_heads=hf["num_heads"],
      head_dim=hf["d_kv"], mlp_dim=hf["d_ff"], num_encoder_layers=hf["num_layers"],
      num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
      mlp_activations=(act, "linear") if gated else (act,),
      logits_via_embedding=tied,
      dropout_rate=hf.get("dropout_rate", 0.1),
      layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6))


def config_to_hf(config: T5Config) -> dict:
  acts = config.mlp_activations
  if len(acts) == 2 and acts[1] == "linear" and acts[0] in ("gelu", "relu"):
    proj = f"gated-{acts[0]}"
  elif acts == ("relu",):
    proj = "relu"
  else:
    raise CheckpointError(
        f"mlp_activations={acts} has no Hugging Face T5 equivalent; HF T5 supports "
        f"('relu',), ('gelu', 'linear') and ('relu', 'linear').")
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
      "vocab_size": config.vocab_size, "d_model": config.emb_dim, "d_kv": config.head_dim,
      "d_ff": config.mlp_dim, "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers, "num_heads": config.num_heads,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "dropout_rate": config.dropout_rate, "layer_norm_epsilon": config.layer_norm_epsilon,
      "feed_forward_proj": proj, "is_gated_act": proj.startswith("gated-"),
      # transformers 4 reads tie_word_embeddings; 5 reads it as scale_decoder_outputs and
      # unties when the file has a distinct lm_head.weight. Both load this correctly.
      "tie_word_embeddings": config.logits_via_embedding,
      "scale_decoder_outputs": config.logits_via_embedding, "initializer_factor": 1.0,
      "is_encoder_decoder": True, "use_cache": True, "pad_token_id": 0, "eos_token_id": 1,
      "decoder_start_token_id": 0,
  }


def key_map(config: T5Config) -> list[tuple[str, str, bool]]:
  """(HF tensor name, T5X param path, transposed?) for every parameter of `config`."""
  mlp = (["wi"] if len(config.mlp_activations) == 1
         else [f"wi_{i}" for i in range(len(config.mlp_activations))]) + ["wo"]
  attn = {"q": "query", "k": "key", "v": "value", "o": "out"}
  rows = [("shared.weight", "token_embedder/embedding", False)]
  for stack, n, blocks in (
      ("encoder", config.num_encoder_layers,
       [("SelfAttention", "attention", "pre_attention_layer_norm")]),
      ("decoder", config.num_decoder_layers,
       [("SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
        ("EncDecAttention", "encoder_decoder_attention", "pre_cross_attention_layer_norm")])):
    rows.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 f"{stack}/relpos_bias/rel_embedding", True))
    for i in range(n):
      hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
      for j, (hf_attn, attn_name, norm) in enumerate(blocks):
        for h, t in attn.items():
          rows.append((f"{hf}.{j}.{hf_attn}.{h}.weight", f"{ours}/{attn_name}/{t}/kernel", True))
        rows.append((f"{hf}.{j}.layer_norm.weight", f"{ours}/{norm}/scale", False))
      j = len(blocks)
      for w in mlp:
        rows.append((f"{hf}.{j}.DenseReluDense.{w}.weight", f"{ours}/mlp/{w}/kernel", True))
      rows.append((f"{hf}.{j}.layer_norm.weight", f"{ours}/pre_mlp_layer_norm/scale", False))
    norm = "encoder_norm" if stack == "encoder" else "decoder_norm"
    rows.append((f"{stack}.final_layer_norm.weight", f"{stack}/{norm}/scale", False))
  if not config.logits_via_embedding:
    rows.append(("lm_head.weight", "decoder/logits_dense/kernel", True))
  return rows


def is_hf_folder(path: str) -> bool:
  return (files.exists(files.join(path, CONFIG_FILE))
          and (files.exists(files.join(path, WEIGHTS_FILE))
               or files.exists(files.join(path, INDEX_FILE))))


# safetensors dtype codes -> numpy (safetensors.numpy.load lacks BF16, HF's common dtype).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                       "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _safetensors_problem(data: bytes) -> Optional[str]:
  """Why `data` is not a whole safetensors file (None when its layout adds up)."""
  size = len(data)
  if size < 8:
    return (f"is truncated ({size} bytes; a safetensors file starts with an 8-byte header "
            f"length)" if size else "is empty (0 bytes)")
  header_len = int.from_bytes(data[:8], "little")
  if 8 + header_len > size:
    return (f"is truncated ({size:,} bytes; its header alone needs {8 + header_len:,}), "
            f"or not a safetensors file")
  try:
    header = json.loads(data[8:8 + header_len])
    end = max([0] + [int(v["data_offsets"][1]) for k, v in header.items()
                     if k != "__metadata__"])
  except (ValueError, TypeError, KeyError, IndexError, AttributeError):
    return "is corrupt (its header is not safetensors JSON)"
  if 8 + header_len + end > size:
    return f"is truncated ({size:,} bytes; its header describes {8 + header_len + end:,})"
  return None


def _load_safetensors(data: bytes, source: str) -> dict[str, np.ndarray]:
  """Tensors of one safetensors file; a truncated or corrupt file is one CheckpointError."""
  problem = _safetensors_problem(data)
  if problem is not None:
    raise CheckpointError(f"{source} {problem}; copy it again from where it was written.")
  try:
    views = safetensors.deserialize(data)
  except Exception as e:  # safetensors' SafetensorError is no ValueError.
    raise CheckpointError(f"{source} is not a valid safetensors file "
                          f"({' '.join(str(e).split())}).") from None
  out = {}
  for name, view in views:
    if view["dtype"] not in _SAFETENSORS_DTYPES:
      raise CheckpointError(f"{source}: tensor {name} has unsupported dtype {view['dtype']}.")
    out[name] = np.frombuffer(view["data"], _SAFETENSORS_DTYPES[view["dtype"]]).reshape(
        view["shape"])
  return out


def _read_json(path: str, what: str) -> dict:
  try:
    value = json.loads(files.read_bytes(path))
  except ValueError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}); {what}.") from None
  if not isinstance(value, dict):
    raise CheckpointError(f"{path} is not a JSON object; {what}.")
  return value


def _shard_files(folder: str) -> list[str]:
  """Paths of the safetensors files of a folder: its sharded index's, or model.safetensors."""
  index = files.join(folder, INDEX_FILE)
  if files.exists(index):
    weight_map = _read_json(index, "a sharded checkpoint's index maps tensor names to "
                                   "shard files").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise CheckpointError(f"{index} has no weight_map of tensor names to shard files.")
    shards = sorted(set(weight_map.values()))
    for name in shards:
      if not files.exists(files.join(folder, name)):
        count = sum(v == name for v in weight_map.values())
        raise CheckpointError(
            f"{files.join(folder, name)} is missing: {INDEX_FILE} puts {count} tensor(s) "
            f"in it; copy every shard of the checkpoint.")
  else:
    shards = [WEIGHTS_FILE]
  return [files.join(folder, name) for name in shards]


def _read_tensors(folder: str) -> dict[str, np.ndarray]:
  tensors = {}
  for path in _shard_files(folder):
    tensors.update(_load_safetensors(files.read_bytes(path), path))
  return tensors


def _check_folder(folder: str, source: str) -> None:
  """A config.json and safetensors weights, or the one-line error saying what is missing."""
  if not files.exists(files.join(folder, CONFIG_FILE)):
    raise CheckpointError(f"{source}: no {CONFIG_FILE}.")
  if not is_hf_folder(folder):
    pickled = files.exists(files.join(folder, "pytorch_model.bin"))
    raise CheckpointError(
        f"{source}: no {WEIGHTS_FILE}"
        + (" (pytorch_model.bin is a pickle, which ptjax never loads; re-save with "
           "`model.save_pretrained(dir, safe_serialization=True)`)." if pickled else "."))


def check_unexpected(names, used, source: str) -> None:
  """CheckpointError naming the tensors of an HF checkpoint that map to no parameter."""
  unexpected = sorted(set(names) - set(used))
  if unexpected:
    raise CheckpointError(
        f"{source}: unexpected tensor(s) {', '.join(unexpected[:5])} for a "
        f"T5ForConditionalGeneration with this config.json.")


def read_hf(folder: str, dtype: Optional[str] = None) -> tuple[T5Config, dict]:
  """(T5Config, T5X-named params) of an HF T5ForConditionalGeneration folder."""
  source = f"Hugging Face checkpoint {folder}"
  _check_folder(folder, source)
  tensors = _read_tensors(folder)
  has_lm_head = ("lm_head.weight" in tensors and "shared.weight" in tensors
                 and not np.array_equal(tensors["lm_head.weight"], tensors["shared.weight"]))
  config = config_from_hf(_read_json(files.join(folder, CONFIG_FILE),
                                     "a Hugging Face T5 config.json is a JSON object"),
                          f"{source}/{CONFIG_FILE}", has_lm_head)
  if config.logits_via_embedding:  # An exporter's copy of the tied embedding.
    tensors.pop("lm_head.weight", None)
  params, used = {}, set(_TIED_COPIES)
  for hf_name, path, transpose in key_map(config):
    if hf_name not in tensors:
      raise CheckpointError(f"{source}: tensor {hf_name} (for {path}) is missing.")
    array = tensors[hf_name]
    check_dtype(hf_name, array.dtype, source)
    array = np.ascontiguousarray(array.T) if transpose else array
    params[path] = array.astype(resolve_dtype(dtype)) if dtype else array
    used.add(hf_name)
  check_unexpected(tensors, used, source)
  params = traverse_util.unflatten_dict(params, sep="/")
  check_params(params, config, source)
  return config, params


def save_hf(params: dict, config: T5Config, folder: str, dtype: Optional[str] = None) -> str:
  """Writes config.json and model.safetensors that `transformers` loads as-is."""
  check_params(params, config, "save_hf")
  tensors = flat(params)
  out = {}
  for hf_name, path, transpose in key_map(config):
    array = np.asarray(tensors[path])
    array = array.astype(resolve_dtype(dtype)) if dtype else array
    out[hf_name] = np.ascontiguousarray(array.T if transpose else array)
  files.write_bytes(files.join(folder, CONFIG_FILE),
                      json.dumps(config_to_hf(config), indent=2).encode())
  files.write_bytes(files.join(folder, WEIGHTS_FILE),
                      safetensors.numpy.save(out, metadata={"format": "pt"}))
  return folder
