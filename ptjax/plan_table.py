"""docs/scale.md's table: for each model size, mode and slice, the cheapest configuration
whose train and eval steps fit (`python -m ptjax.plan --table`).

The search compiles as little as it can, since an XXL compile takes seconds even scanned:
  1. model-parallel degrees from 1 up (collectives in every layer are the costliest knob);
     a degree whose exact argument bytes (shard sizes, no compile) already overflow the
     device is skipped;
  2. within a degree, the rungs of `LADDER`, cheapest first: no remat, full remat, then
     full remat with 2 / 4 / 8 microbatches (T5X's gradient accumulation); at each rung
     float32 frozen weights, then bfloat16 (FROZEN_DTYPE, prompt tuning only: halves the
     frozen tree, loss within 2% on the mini model; tests/train/test_frozen_dtype.py);
  3. when the first rung does not fit, the degree's last rung (its smallest footprint) is
     compiled next: if even that does not fit, the degree is abandoned.
'minimal' remat sits between 'none' and 'full' in cost; the table leaves it out (one more
compile per rung); run the planner with --remat minimal for it.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from ptjax.plan import ACCELERATORS, MODES, PlanConfig, PlanResult, _gib, ensure_devices, plan


@dataclasses.dataclass(frozen=True)
class Slice:
  """A pod slice / GPU host: `devices` JAX devices of one accelerator."""
  name: str
  accelerator: str
  devices: int


# TPU names count TensorCores: a v3-32 is 16 chips = 32 JAX devices (one per core); v4 and
# v5p chips are one JAX device each (megacore): v4-32 and v5p-8 are 16 and 4 devices.
SLICES = {s.name: s for s in (
    Slice("v3-32", "v3", 32),        # the paper's "16 TPU v3" (Table 5: large, xl, xxl)
    Slice("v4-32", "v4", 16),
    Slice("v5e-16", "v5e", 16),
    Slice("v5p-8", "v5p", 4),
    Slice("8xa100-80g", "a100-80g", 8),
    Slice("8xh100", "h100", 8),
    Slice("1xh200", "h200", 1),
)}
TABLE_SIZES = ("small", "base", "large", "xl", "xxl")
TABLE_SLICES = ("v3-32", "v4-32", "8xa100-80g", "1xh200")
# (microbatches, remat), cheapest first.
LADDER = ((None, "none"), (None, "full"), (2, "full"), (4, "full"), (8, "full"))


def degrees(config: PlanConfig, devices: int) -> list[tuple[int, int]]:
  """(data, model) meshes of `devices`, model-parallel degree ascending, whose data axis
  splits the batch."""
  return [(devices // m, m) for m in (1, 2, 4, 8, 16, 32, 64)
          if m <= devices and devices % m == 0 and config.batch % (devices // m) == 0]


def rungs(config: PlanConfig, mesh: tuple[int, int]) -> list[PlanConfig]:
  """`LADDER` x frozen dtypes at `mesh`, cheapest first; microbatches only where each one
  still splits evenly over the data axis."""
  frozen = ("float32", "bfloat16") if config.mode == "prompt_tuning" else ("float32",)
  out = []
  for micro, remat in LADDER:
    if micro and (config.batch % micro or (config.batch // micro) % mesh[0]):
      continue
    out += [dataclasses.replace(config, mesh=mesh, microbatches=micro, remat=remat,
                                frozen_dtype=f, eval_step=False) for f in frozen]
  return out


def argument_bytes(config: PlanConfig) -> int:
  """Exact per-device argument bytes (the shards' sizes) without compiling."""
  from ptjax.plan import abstract_steps
  _, args, _ = abstract_steps(config)
  total = 0
  for x in jax.tree.leaves(args):
    shard = x.sharding.shard_shape(x.shape)
    total += int(np.prod(shard)) * x.dtype.itemsize
  return total


def cheapest(config: PlanConfig, devices: int,
             log: Optional[Callable[[str], None]] = None) -> tuple[Optional[PlanResult], str]:
  """The cheapest configuration of `devices` whose train and eval steps fit -> (result,
  ''), or (None, why the last one tried does not)."""
  last = "no mesh of these devices splits the batch"
  for mesh in degrees(config, devices):
    ladder = rungs(config, mesh)
    usable = int(ladder[0].memory_bytes * (1 - config.headroom))
    smallest = ladder[-1]
    needed = argument_bytes(smallest)
    if needed > usable:
      last = f"{describe(smallest)}: its arguments alone need {_gib(needed)} GiB"
      continue
    tried = {}

    def attempt(c: PlanConfig) -> Optional[PlanResult]:
      nonlocal last
      if c not in tried:
        try:
          tried[c] = plan(c)
        except ValueError as e:  # A degree that does not divide a weight.
          tried[c] = None
          last = str(e)
          return None
        if log:
          log(f"  {describe(c)}: train peak {_gib(tried[c].train.peak_bytes)} GiB "
              f"({'fits' if tried[c].fits else 'does not fit'})")
        if not tried[c].fits:
          last = f"{describe(c)} needs {_gib(tried[c].peak_bytes)} GiB"
      return tried[c]

    first = attempt(ladder[0])
    if first is None:
      continue
    if not first.fits:
      end = attempt(smallest)
      if end is None or not end.fits:
        continue
    for c in ladder:
      result = attempt(c)
      if result is None or not result.fits:
        continue
      final = plan(dataclasses.replace(c, eval_step=True), train=result.train)
      if final.fits:
        return final, ""
      last = f"{describe(c)}: its eval step needs {_gib(final.eval.peak_bytes)} GiB"
  return None, last


def describe(c: PlanConfig) -> str:
  parts = [f"{c.mesh[0]}x{c.mesh[1]}"]
  if c.frozen_dtype != "float32":
    parts.append(f"frozen {c.frozen_dtype}")
  if c.remat != "none":
    parts.append(f"remat {c.remat}")
  if c.microbatches:
    parts.append(f"{c.microbatches} microbatches")
  return ", ".join(parts)


def table(base: PlanConfig, sizes: Sequence[str] = TABLE_SIZES,
          slices: Sequence[str] = TABLE_SLICES, log=None) -> str:
  """The markdown table: one row per (size, mode, slice) with the cheapest fitting
  configuration (`cheapest`) and its per-device peak of the train and eval steps."""
  from ptjax.model import PRESETS
  for size in sizes:
    if size not in PRESETS:
      raise ValueError(f"--sizes: {size!r} is not a preset; choose from {', '.join(PRESETS)}.")
  for name in slices:
    if name not in SLICES:
      raise ValueError(f"--slices: {name!r} is not a slice; choose from {', '.join(SLICES)}.")
  ensure_devices(max(SLICES[s].devices for s in slices))
  lines = ["| model | mode | slice | cheapest fitting configuration (data x model, ...) | "
           "peak GiB / device (train, eval) | GiB / device |",
           "|---|---|---|---|---|---|"]
  for size in sizes:
    for mode in MODES:
      for name in slices:
        s = SLICES[name]
        config = dataclasses.replace(base, model=size, mode=mode, accelerator=s.accelerator,
                                     prompt_length=base.prompt_length if mode ==
                                     "prompt_tuning" else None)
        if log:
          log(f"{size} {mode} {name}:")
        result, why = cheapest(config, s.devices, log)
        memory = f"{ACCELERATORS[s.accelerator].memory_gib:g}"
        if result is None:
          lines.append(f"| {size} | {mode} | {name} | does not fit ({why}) | - | {memory} |")
        else:
          lines.append(f"| {size} | {mode} | {name} | {describe(result.config)} | "
                       f"{_gib(result.train.peak_bytes)}, {_gib(result.eval.peak_bytes)} | "
                       f"{memory} |")
        if log:
          log(lines[-1])
  return "\n".join(lines)
