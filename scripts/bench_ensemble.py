"""Prompt ensemble in one batched pass vs N separate passes (the paper's Table 3 setup).

  python scripts/bench_ensemble.py --prompts 5 --batch 1 8 32 --inputs 128 --prompt_length 20

The shipped mini T5 (or --config NAME for a random preset), N random prompts, greedy
decoding of `--targets` tokens. Prints a JSON list, one object per batch size: median wall
time of N separate `generate` calls (one PromptT5 per prompt) and of one MultiPromptT5 call
on the inputs replicated N times, their ratio, and whether the predictions are identical.
The forward passes alone; scripts/bench_ensemble_runs.py times whole runs.
"""

import argparse
import functools
import json
import statistics
import time

import jax
import numpy as np

from ptjax import assets, prompts
from ptjax.checkpoints import load_checkpoint
from ptjax.model import inference, init_params, preset


def timed(fn, repeats):
  times, out = [], None
  for _ in range(repeats + 1):  # The first call compiles.
    tic = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - tic)
  return statistics.median(times[1:]), out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="mini_large")
  parser.add_argument("--random", action="store_true", help="random weights, not the shipped")
  parser.add_argument("--prompts", type=int, default=5)
  parser.add_argument("--batch", type=int, nargs="+", default=[32])
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=8)
  parser.add_argument("--prompt_length", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", help="activations; bfloat16 on GPU/TPU")
  args = parser.parse_args()
  config = preset(args.config, dropout_rate=0.0, dtype=args.dtype)
  if args.random or args.config != "mini_large":
    params = jax.tree.map(np.asarray, init_params(config, jax.random.PRNGKey(0)))
  else:
    params = load_checkpoint(assets.MINI_T5_CHECKPOINT, config)[1]
  params = jax.device_put(params)  # Resident, as in a served model: no copy in the timing.
  rng = np.random.default_rng(0)
  table = [rng.uniform(-0.5, 0.5, (args.prompt_length, config.emb_dim)).astype(np.float32)
           for _ in range(args.prompts)]
  single = prompts.PromptT5(config, prompt_length=args.prompt_length)
  gen_single = jax.jit(functools.partial(inference.generate, single,
                                         max_decode_length=args.targets))
  gen_multi = jax.jit(functools.partial(inference.generate, prompts.MultiPromptT5(config),
                                        max_decode_length=args.targets))
  print(json.dumps([compare(gen_single, gen_multi, params, table, rng, batch, args)
                    for batch in args.batch], indent=1))


def compare(gen_single, gen_multi, params, table, rng, batch, args):
  tokens = rng.integers(3, 1000, (batch, args.inputs)).astype(np.int32)
  tokens[:, -1] = 1
  replicated, ids = prompts.replicate_for_ensemble(tokens, args.prompts)
  singles = [jax.device_put({"params": params, "prompt": {"prompt": p}}) for p in table]
  variables = jax.device_put(prompts.variables_for(params, prompts.stack_prompts(table), ids))
  tokens, replicated = jax.device_put(tokens), jax.device_put(replicated)
  separate_s, separate = timed(lambda: [gen_single(v, tokens)[0] for v in singles],
                               args.repeats)
  together_s, (together, _) = timed(lambda: gen_multi(variables, replicated), args.repeats)
  same = bool(np.array_equal(np.concatenate([np.asarray(s) for s in separate]),
                             np.asarray(together)))
  return {"device": jax.devices()[0].device_kind, "config": args.config,
          "dtype": args.dtype, "prompts": args.prompts, "batch": batch,
          "inputs": args.inputs, "prompt_length": args.prompt_length, "targets": args.targets,
          "separate_median_s": round(separate_s, 5), "one_pass_median_s": round(together_s, 5),
          "one_pass_over_separate": round(together_s / separate_s, 3),
          "identical_predictions": same}


if __name__ == "__main__":
  main()
