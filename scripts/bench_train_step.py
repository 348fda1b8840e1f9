"""Prompt tuning vs model tuning: one train step of the same model, batch and sequence.

  python scripts/bench_train_step.py --config small --batch 8 --inputs 128 --targets 16

Model tuning carries the same P-token prompt with every variable trainable, so both
steps see identical sequences. Prints one JSON object: XLA cost-analysis FLOPs of the
compiled step, median step time, examples/s, compiled temp memory, optimizer-state
bytes, and the FLOPs ratio (the analytic floor for prompt tuning, forward + activation
gradients only, is about 0.70 of model tuning's).
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np

from ptjax import prompts
from ptjax.model import init_params, preset
from ptjax.model.inference import shift_right
from ptjax.train import optim, partitioning, runs
from ptjax.train.step import LossConfig, build_steps


def measure(config, params, trainable, args):
  mesh = partitioning.make_mesh()
  run = runs.build_run(config, params, args.prompt_length, prompts.random_uniform(),
                          trainable, mesh)
  optimizer = optim.paper_adafactor()
  state, shardings = runs.init_state(run, optimizer)
  steps = build_steps(run.model, optimizer, mesh, shardings, run.frozen_shardings, LossConfig(),
                      dropout=config.dropout_rate > 0)
  rng = np.random.default_rng(0)
  x = rng.integers(2, config.vocab_size, (args.batch, args.inputs)).astype(np.int32)
  t = rng.integers(2, config.vocab_size, (args.batch, args.targets)).astype(np.int32)
  batch = {"encoder_input_tokens": x, "decoder_input_tokens": np.asarray(shift_right(t)),
           "decoder_target_tokens": t}
  batch = jax.device_put(batch, partitioning.batch_sharding(mesh))
  compiled = steps.train.lower(state, run.frozen, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  opt_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state.opt_state))
  trainable_params = sum(np.size(x) for x in jax.tree.leaves(state.trainable))
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, run.frozen, batch)
    jax.block_until_ready(metrics)
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {"flops": float(cost["flops"]), "median_step_s": round(median, 5),
          "examples_per_s": round(args.batch / median, 2),
          "temp_bytes": int(getattr(memory, "temp_size_in_bytes", -1)),
          "argument_bytes": int(getattr(memory, "argument_size_in_bytes", -1)),
          "optimizer_state_bytes": int(opt_bytes), "trainable_params": int(trainable_params)}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="tiny")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=128)
  parser.add_argument("--targets", type=int, default=16)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()
  config = preset(args.config, dtype=args.dtype)
  params = jax.tree.map(np.asarray, init_params(config, jax.random.PRNGKey(0)))
  prompt = measure(config, params, optim.PROMPT_ONLY, args)
  model = measure(config, params, optim.EVERYTHING, args)
  print(json.dumps({
      "config": args.config, "device": str(jax.devices()[0].platform),
      "batch": args.batch, "inputs": args.inputs, "targets": args.targets,
      "prompt_length": args.prompt_length, "dtype": args.dtype,
      "prompt_tuning": prompt, "model_tuning": model,
      "flops_ratio_prompt_over_model": round(prompt["flops"] / model["flops"], 4),
      "step_time_ratio_prompt_over_model": round(prompt["median_step_s"] / model["median_step_s"], 4),
  }, indent=1))


if __name__ == "__main__":
  main()
