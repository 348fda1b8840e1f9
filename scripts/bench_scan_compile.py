"""AOT compile time of the prompt-tuning loss gradient, scanned vs unrolled layer stacks.

  python scripts/bench_scan_compile.py --models xl xxl

Abstract params (`jax.ShapeDtypeStruct`, nothing allocated), bfloat16 activations, one
device; the gradient is w.r.t. the prompt only (the frozen model is an argument). Prints
one JSON object per (model, layout): lower_s (trace + lower), compile_s (XLA compile).
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp

from ptjax import prompts
from ptjax.model import param_shapes, preset
from ptjax.model.inference import shift_right


def loss(config, prompt_length, prompt, params, inputs, targets):
  model = prompts.PromptT5(config, prompt_length=prompt_length)
  logits = model.apply({"params": params, "prompt": {"prompt": prompt}}, inputs,
                       shift_right(targets), targets)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, nll, 0.0))


def measure(name, scan, remat, batch, inputs, targets, prompt_length):
  config = preset(name, dtype="bfloat16", scan_layers=scan, remat_policy=remat)
  args = (jax.ShapeDtypeStruct((prompt_length, config.emb_dim), jnp.float32),
          param_shapes(config),
          jax.ShapeDtypeStruct((batch, inputs), jnp.int32),
          jax.ShapeDtypeStruct((batch, targets), jnp.int32))
  grad = jax.jit(jax.grad(functools.partial(loss, config, prompt_length)))
  start = time.perf_counter()
  lowered = grad.lower(*args)
  lowered_at = time.perf_counter()
  lowered.compile()
  done = time.perf_counter()
  return {"model": name, "layout": "scanned" if scan else "unrolled", "remat": remat,
          "batch": batch, "inputs": inputs, "prompt": prompt_length, "targets": targets,
          "lower_s": round(lowered_at - start, 2), "compile_s": round(done - lowered_at, 2),
          "backend": jax.default_backend()}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--models", nargs="+", default=["xl"])
  parser.add_argument("--remat", default="none")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=512)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--targets", type=int, default=16)
  args = parser.parse_args()
  for name in args.models:
    for scan in (True, False):
      print(json.dumps(measure(name, scan, args.remat, args.batch, args.inputs, args.targets,
                               args.prompt_length)), flush=True)


if __name__ == "__main__":
  main()
