"""Builds tests/fixtures/hf_parity/: small random HF T5 models with their outputs.

Needs the `compare` extra (torch CPU wheel + transformers):
    pip install -e .[compare] && python scripts/make_hf_parity_fixture.py

For each model it writes `model/` (config.json + model.safetensors, as
`save_pretrained` writes them) and `expected.safetensors`: encoder inputs,
decoder targets (both 0-padded), HF float32 logits of the teacher-forced pass and
HF greedy decodes. tests/model/test_hf_parity.py checks ptjax against them.
"""

import argparse
import json
import os

import numpy as np
import safetensors.numpy
import torch
import transformers

MODELS = {
    # T5 1.1 layout with head_dim * heads (4 * 6 = 24) != d_model (16) and a deeper decoder.
    "v1_1_head_dim": dict(vocab_size=96, d_model=16, d_kv=6, num_heads=4, d_ff=24,
                          num_layers=2, num_decoder_layers=3,
                          relative_attention_num_buckets=32,
                          relative_attention_max_distance=128,
                          feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # Few buckets, short max_distance, inputs far longer than max_distance.
    "v1_1_short_distance": dict(vocab_size=80, d_model=12, d_kv=4, num_heads=3, d_ff=20,
                                num_layers=2, num_decoder_layers=2,
                                relative_attention_num_buckets=8,
                                relative_attention_max_distance=20,
                                feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # T5 1.0: ReLU MLP, tied embedding, logits scaled by 1/sqrt(d_model).
    "v1_0_tied": dict(vocab_size=72, d_model=16, d_kv=4, num_heads=4, d_ff=32,
                      num_layers=2, num_decoder_layers=2, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, feed_forward_proj="relu",
                      tie_word_embeddings=True),
}
INPUT_LENGTHS = {"v1_1_short_distance": 48}
BATCH, INPUT_LEN, TARGET_LEN, DECODE_LEN = 3, 12, 7, 10


def padded(rng, vocab, lengths, width):
  out = np.zeros((len(lengths), width), np.int64)
  for i, n in enumerate(lengths):
    out[i, :n - 1] = rng.integers(2, vocab, n - 1)
    out[i, n - 1] = 1  # EOS
  return out


def shift_right(x):
  return np.pad(x, ((0, 0), (1, 0)))[:, :-1]


def build(name, kwargs, out_dir, seed):
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  config = transformers.T5Config(dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                                 eos_token_id=1, **kwargs)
  model = transformers.T5ForConditionalGeneration(config).eval()
  if not kwargs["tie_word_embeddings"] and model.lm_head.weight is model.shared.weight:
    # transformers 5 always ties lm_head to the embedding at construction (loading a file
    # with a distinct lm_head unties it); T5 1.1 needs its own output layer.
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    getattr(model, "all_tied_weights_keys", {}).pop("lm_head.weight", None)
  if kwargs["tie_word_embeddings"]:
    # A random tied model echoes its BOS/pad embedding (id 0) forever; zeroing that row
    # makes its greedy decodes informative.
    with torch.no_grad():
      model.shared.weight[0].zero_()
  in_len = INPUT_LENGTHS.get(name, INPUT_LEN)
  inputs = padded(rng, config.vocab_size, [in_len, in_len // 2, 3], in_len)
  targets = padded(rng, config.vocab_size, [TARGET_LEN, 4, 2], TARGET_LEN)
  ids = torch.tensor(inputs)
  with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=(ids > 0).long(),
                   decoder_input_ids=torch.tensor(shift_right(targets)),
                   use_cache=False).logits
    gen = model.generate(input_ids=ids, attention_mask=(ids > 0).long(), do_sample=False,
                         num_beams=1, max_new_tokens=DECODE_LEN, min_length=0,
                         use_cache=False)  # transformers 5 sizes its KV cache by encoder depth.
  greedy = np.zeros((BATCH, DECODE_LEN), np.int32)
  seq = gen[:, 1:].numpy()  # Drop the decoder start token.
  greedy[:, :seq.shape[1]] = seq
  model_dir = os.path.join(out_dir, name, "model")
  model.save_pretrained(model_dir, safe_serialization=True)
  for extra in ("generation_config.json",):  # Not needed by ptjax.
    if os.path.exists(os.path.join(model_dir, extra)):
      os.remove(os.path.join(model_dir, extra))
  saved = safetensors.numpy.load_file(os.path.join(model_dir, "model.safetensors"))
  assert ("lm_head.weight" in saved) != kwargs["tie_word_embeddings"], sorted(saved)
  safetensors.numpy.save_file(
      {"inputs": inputs.astype(np.int32), "targets": targets.astype(np.int32),
       "logits": logits.numpy().astype(np.float32), "greedy": greedy},
      os.path.join(out_dir, name, "expected.safetensors"))
  return {"greedy": greedy.tolist(), "transformers": transformers.__version__,
          "torch": torch.__version__, "seed": seed}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                   "fixtures", "hf_parity"))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  report = {name: build(name, kw, args.out, args.seed + i) for i, (name, kw) in
            enumerate(MODELS.items())}
  with open(os.path.join(args.out, "README.json"), "w") as f:
    json.dump({"made_by": "scripts/make_hf_parity_fixture.py", "models": report}, f, indent=1)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
