r"""Will it fit? Per-device memory of the real train / eval step, compiled ahead of time.

  python -m ptjax.plan --model xxl --mesh 4x4 --batch 32 --inputs 512 --targets 16 \
      --activation_dtype bfloat16 --accelerator v4
  python -m ptjax.plan --table      # docs/scale.md's table

The steps are ptjax's own (`train.step.build_steps`), with the trainer's shardings
(`train.runs.build_run` / `init_state`, `train.partitioning`) and optimizer
(`train.optim.paper_adafactor`), traced with abstract arrays (`jax.ShapeDtypeStruct`: nothing
is allocated) and compiled by XLA for a mesh of simulated CPU devices. XLA's
`memory_analysis()` gives the bytes per device of the arguments (train state, frozen
weights, batch), the temporaries and the outputs; `cost_analysis()` the FLOPs.

Argument and output bytes are exact (they are the arrays' shard sizes). Temporaries are
XLA's CPU backend's buffer assignment: TPU / GPU fuse and schedule differently, so treat
them as an estimate and keep headroom (`--headroom`).

Exit status: 0 fits, 1 does not fit, 2 a bad flag (one line on stderr): a launch script
that stops on a non-zero plan launches only what fits. `--table` exits 0.
"""

import argparse
import dataclasses
import json
import sys
import time
from typing import Any, Optional, Sequence

from ptjax import console

# jax is imported lazily (`_jax()`): the CLI must set the simulated device count before
# JAX's backend starts.

GIB = 2 ** 30
MODES = ("prompt_tuning", "model_tuning")
REMATS = ("none", "full", "minimal")
DTYPES = ("float32", "bfloat16")
CPU_NOTE = ("Temporaries are estimated by XLA's CPU backend, whose buffer assignment and "
            "fusion differ from TPU / GPU: they are approximate; argument and output bytes "
            "are exact.")


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One device as JAX sees it (a TPU v3 core; a v4 / v5p megacore chip; a GPU)."""
  name: str
  memory_gib: float
  description: str


FLOPS_NOTE = ("XLA counts a loop's body once: the FLOPs count one microbatch / one scanned "
              "layer, not the whole step.")
ACCELERATORS = {a.name: a for a in (
    Accelerator("v3", 16, "TPU v3 core (a v3-N slice has N of them)"),
    Accelerator("v4", 32, "TPU v4 chip (a v4-N slice has N/2)"),
    Accelerator("v5e", 16, "TPU v5e chip (a v5litepod-N slice has N)"),
    Accelerator("v5p", 95, "TPU v5p chip (a v5p-N slice has N/2)"),
    Accelerator("a100-40g", 40, "NVIDIA A100 40 GB"),
    Accelerator("a100-80g", 80, "NVIDIA A100 80 GB"),
    Accelerator("h100", 80, "NVIDIA H100 80 GB"),
    Accelerator("h200", 141, "NVIDIA H200 141 GB"),
)}


def accelerator(name: str) -> Accelerator:
  if name not in ACCELERATORS:
    raise ValueError(f"--accelerator {name!r} is not a preset; choose from "
                     f"{', '.join(ACCELERATORS)}.")
  return ACCELERATORS[name]


@dataclasses.dataclass(frozen=True)
class PlanConfig:
  """One training configuration to compile.

  Attributes:
    model: a `ptjax.model.PRESETS` name (tiny, small ... xxl, mini_*).
    mesh: (data, model) devices, T5X's data x model parallelism; product = devices.
    batch: global batch (BATCH_SIZE); inputs / targets: TASK_FEATURE_LENGTHS (tokens; the
      prompt is added to the encoder's length on top of `inputs`).
    prompt_length: prompt rows (PROMPT_LENGTH); None = 100 for prompt tuning, 0 for model
      tuning (which trains no prompt).
    mode: 'prompt_tuning' (TRAINABLE the prompt) or 'model_tuning' (every weight).
    remat / activation_dtype / dropout_rate / scan_layers: T5Config fields (REMAT_POLICY,
      ACTIVATION_DTYPE, DROPOUT_RATE; scan_layers None leaves the field alone).
    frozen_dtype: FROZEN_DTYPE, the frozen tree's dtype on the devices (prompt tuning only).
    microbatches: trainer.Trainer.num_microbatches (None: the whole batch at once).
    accelerator: an ACCELERATORS name; memory_gib overrides its memory (GiB per device).
    headroom: fraction of the memory kept free (runtime, fragmentation, the CPU estimate).
    eval_step: also compile the eval step (same batch, not microbatched).
  """
  model: str = "base"
  mesh: tuple = (1, 1)
  batch: int = 32
  inputs: int = 512
  targets: int = 16
  prompt_length: Optional[int] = None
  mode: str = "prompt_tuning"
  remat: str = "none"
  activation_dtype: str = "bfloat16"
  frozen_dtype: str = "float32"
  dropout_rate: float = 0.1
  microbatches: Optional[int] = None
  scan_layers: Optional[bool] = None
  accelerator: str = "v4"
  memory_gib: Optional[float] = None
  headroom: float = 0.1
  eval_step: bool = True

  def __post_init__(self):
    from ptjax.model import PRESETS
    object.__setattr__(self, "mesh", tuple(int(m) for m in self.mesh))
    if self.model not in PRESETS:
      raise ValueError(f"--model {self.model!r} is not a preset; choose from "
                       f"{', '.join(PRESETS)}.")
    if len(self.mesh) != 2 or min(self.mesh) < 1:
      raise ValueError(f"--mesh {'x'.join(map(str, self.mesh))}: give DATAxMODEL with "
                       f"positive sizes, e.g. 4x4.")
    for name in ("batch", "inputs", "targets"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name}={getattr(self, name)} must be >= 1.")
    if self.batch % self.mesh[0]:
      raise ValueError(f"--batch {self.batch} does not split over {self.mesh[0]} data-parallel "
                       f"devices (--mesh {self.mesh[0]}x{self.mesh[1]}): use a multiple.")
    if self.mode not in MODES:
      raise ValueError(f"--mode {self.mode!r}: use one of {', '.join(MODES)}.")
    if self.mode == "model_tuning" and self.prompt_length:
      raise ValueError("--mode model_tuning trains no prompt: drop --prompt_length.")
    if self.mode == "model_tuning" and self.frozen_dtype != "float32":
      raise ValueError("--frozen_dtype bfloat16 with --mode model_tuning: nothing is frozen "
                       "(every weight trains, in float32): drop --frozen_dtype.")
    if self.mode == "prompt_tuning" and self.prompt_length is not None and \
        self.prompt_length < 1:
      raise ValueError(f"--prompt_length {self.prompt_length} with --mode prompt_tuning: "
                       f"give >= 1 (or --mode model_tuning).")
    if self.remat not in REMATS:
      raise ValueError(f"--remat {self.remat!r}: use one of {', '.join(REMATS)}.")
    for name in ("activation_dtype", "frozen_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"--{name} {getattr(self, name)!r}: use float32 or bfloat16.")
    if self.microbatches is not None and (self.microbatches < 1 or
                                          self.batch % self.microbatches):
      raise ValueError(f"--microbatches {self.microbatches} must be >= 1 and divide "
                       f"--batch {self.batch}.")
    accelerator(self.accelerator)
    if self.memory_gib is not None and not self.memory_gib > 0:
      raise ValueError(f"--memory_gib {self.memory_gib} must be > 0.")
    if not 0 <= self.headroom < 1:
      raise ValueError(f"--headroom {self.headroom} must be in [0, 1).")

  @property
  def devices(self) -> int:
    return self.mesh[0] * self.mesh[1]

  @property
  def prompt(self) -> int:
    if self.prompt_length is not None:
      return self.prompt_length
    return 100 if self.mode == "prompt_tuning" else 0

  @property
  def memory_bytes(self) -> int:
    gib = self.memory_gib if self.memory_gib is not None else \
        ACCELERATORS[self.accelerator].memory_gib
    return int(gib * GIB)


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """XLA's analysis of one compiled step, per device. Bytes; peak = arguments + outputs -
  aliased (donated inputs reused as outputs) + temporaries. flops: XLA's count for one
  device's program (a loop body, e.g. the microbatch scan, is counted once)."""
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  peak_bytes: int
  flops_per_device: float
  flops_total: float
  compile_s: float


@dataclasses.dataclass(frozen=True)
class PlanResult:
  config: PlanConfig
  trainable_params: int
  frozen_params: int
  train: StepMemory
  eval: Optional[StepMemory]
  memory_bytes: int
  usable_bytes: int
  fits: bool
  note: str = CPU_NOTE

  @property
  def peak_bytes(self) -> int:
    return max(s.peak_bytes for s in (self.train, self.eval) if s is not None)

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["peak_bytes"] = self.peak_bytes
    if (self.config.microbatches or 1) > 1 or self.config.scan_layers:
      out["flops_note"] = FLOPS_NOTE
    out["config"]["mesh"] = list(self.config.mesh)
    out["config"]["prompt_length"] = self.config.prompt
    return out


def ensure_devices(count: int):
  """Makes JAX's CPU backend have >= `count` simulated devices; it must not have started
  yet (the count is fixed when it starts). Raises ValueError otherwise."""
  import jax
  try:
    if jax.config.jax_num_cpu_devices < count:
      jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:
    pass  # Already started: fine if it has enough, checked below.
  have = len(jax.devices("cpu"))
  if have < count:
    raise ValueError(f"this process's JAX started with {have} CPU device(s) but the plan "
                     f"needs {count}: run `python -m ptjax.plan` in a fresh process (or set "
                     f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before jax "
                     f"starts).")


def model_config(config: PlanConfig):
  """The T5Config the plan compiles: the preset with the plan's numerics."""
  from ptjax.model import T5Config, preset
  overrides = dict(dtype=config.activation_dtype, remat_policy=config.remat,
                   dropout_rate=config.dropout_rate)
  if config.scan_layers is not None:
    if "scan_layers" not in {f.name for f in dataclasses.fields(T5Config)}:
      raise ValueError("--scan_layers: this ptjax's T5Config has no scan_layers field; drop "
                       "the flag.")
    overrides["scan_layers"] = config.scan_layers
  return preset(config.model, **overrides)


def abstract_steps(config: PlanConfig, devices: Optional[Sequence[Any]] = None):
  """(steps, (state, frozen, batch) as sharded ShapeDtypeStructs, params counts): what the
  trainer builds (`runs.build_run` + `runs.init_state` + `step.build_steps`), abstractly."""
  import jax
  import jax.numpy as jnp
  from ptjax import prompts
  from ptjax.model import T5, param_axes, param_shapes
  from ptjax.train import optim, partitioning
  from ptjax.train.runs import Run
  from ptjax.train.state import TrainState
  from ptjax.train.step import build_steps

  cfg = model_config(config)
  devices = list(devices if devices is not None else jax.devices("cpu"))[:config.devices]
  mesh = partitioning.make_mesh(mesh_shape=config.mesh, devices=devices)
  frozen_dtype = jnp.dtype(config.frozen_dtype)
  # As `runs.build_run` after `load_checkpoint(dtype=FROZEN_DTYPE)`; the prompt is float32.
  variables = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, frozen_dtype),
                                      param_shapes(cfg))}
  shardings = {"params": partitioning.logical_sharding(mesh, param_axes(cfg),
                                                      param_shapes(cfg))}
  if config.prompt:
    model = prompts.PromptT5(cfg, prompt_length=config.prompt)
    variables["prompt"] = {"prompt": jax.ShapeDtypeStruct((config.prompt, cfg.emb_dim),
                                                          jnp.float32)}
    shardings["prompt"] = {"prompt": partitioning.logical_sharding(
        mesh, jax.sharding.PartitionSpec(*prompts.PROMPT_AXES))}
  else:
    model = T5(cfg)
  trainable = optim.PROMPT_ONLY if config.mode == "prompt_tuning" else optim.EVERYTHING
  train_vars, frozen_vars = optim.split_trainable(variables, trainable)
  train_sh, frozen_sh = optim.split_trainable(shardings, trainable)
  run = Run(model, cfg, mesh, frozen_vars, frozen_sh, train_vars, train_sh)
  # As `runs.init_state`, without running it.
  optimizer = optim.paper_adafactor()
  state = jax.eval_shape(lambda t: TrainState.create(t, optimizer, 0), run.trainable)
  scalar = partitioning.replicated(mesh)
  state_sh = TrainState(step=scalar, trainable=run.trainable_shardings,
                        opt_state=optim.opt_state_shardings(state.opt_state, state.trainable,
                                                            run.trainable_shardings, scalar),
                        rng=scalar)
  steps = build_steps(run.model, optimizer, mesh, state_sh, run.frozen_shardings,
                      dropout=cfg.dropout_rate > 0, num_microbatches=config.microbatches)
  place = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  batch_sh = partitioning.batch_sharding(mesh)
  lengths = {"encoder_input_tokens": config.inputs, "decoder_input_tokens": config.targets,
             "decoder_target_tokens": config.targets, "decoder_loss_weights": config.targets}
  batch = {k: jax.ShapeDtypeStruct((config.batch, n), jnp.int32, sharding=batch_sh)
           for k, n in lengths.items()}
  args = (jax.tree.map(place, state, state_sh), jax.tree.map(place, run.frozen, frozen_sh),
          batch)
  counts = tuple(sum(x.size for x in jax.tree.leaves(t)) for t in (train_vars, frozen_vars))
  return steps, args, counts


def analyse(lowered_fn, args, devices: int) -> StepMemory:
  """Compiles `lowered_fn.lower(*args)`; XLA's memory and cost analyses."""
  tic = time.perf_counter()
  compiled = lowered_fn.lower(*args).compile()
  seconds = time.perf_counter() - tic
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per program.
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get("flops", 0.0))
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  return StepMemory(memory.argument_size_in_bytes, memory.output_size_in_bytes,
                    memory.alias_size_in_bytes, memory.temp_size_in_bytes, peak, flops,
                    flops * devices, round(seconds, 2))


def plan(config: PlanConfig, devices: Optional[Sequence[Any]] = None,
         train: Optional[StepMemory] = None) -> PlanResult:
  """Compiles the train (and eval) step of `config` for its mesh; needs `config.devices`
  CPU devices (`ensure_devices`). `train`: this config's train step already analysed (only
  the eval step is compiled). Raises ValueError on an impossible configuration."""
  ensure_devices(config.devices)
  steps, args, (n_train, n_frozen) = abstract_steps(config, devices)
  train = train or analyse(steps.train, args, config.devices)
  evaluate = analyse(steps.eval, args, config.devices) if config.eval_step else None
  usable = int(config.memory_bytes * (1 - config.headroom))
  peak = max(s.peak_bytes for s in (train, evaluate) if s is not None)
  return PlanResult(config, n_train, n_frozen, train, evaluate, config.memory_bytes, usable,
                    peak <= usable)


def _gib(n: float) -> str:
  return f"{n / GIB:.3f}"


def report(result: PlanResult) -> str:
  """The human-readable plan: per-device GiB of each step, FLOPs, compile time, verdict."""
  c = result.config
  acc = ACCELERATORS[c.accelerator]
  steps = [("train", result.train)] + ([("eval", result.eval)] if result.eval else [])
  prompt = f" (+{c.prompt} prompt)" if c.prompt else ""
  lines = [
      f"ptjax.plan: {c.model} {c.mode}, mesh {c.mesh[0]}x{c.mesh[1]} (data x model, "
      f"{c.devices} simulated CPU devices), batch {c.batch} x {c.inputs} inputs{prompt} / "
      f"{c.targets} targets",
      f"  activations {c.activation_dtype}, frozen {c.frozen_dtype}, remat {c.remat}, "
      f"microbatches {c.microbatches or 1}, dropout {c.dropout_rate}"
      + ("" if c.scan_layers is None else f", scan_layers {c.scan_layers}"),
      f"  parameters: {result.trainable_params:,} trainable, {result.frozen_params:,} frozen",
      "",
      f"  {'per device (GiB)':<24}" + "".join(f"{name:>12}" for name, _ in steps)]
  rows = [("arguments", "argument_bytes"), ("temporaries (approx.)", "temp_bytes"),
          ("outputs", "output_bytes"), ("aliased (donated)", "alias_bytes"),
          ("peak", "peak_bytes")]
  for label, field in rows:
    lines.append(f"  {label:<24}" + "".join(f"{_gib(getattr(s, field)):>12}" for _, s in steps))
  lines.append(f"  {'TFLOPs per device':<24}" + "".join(
      f"{s.flops_per_device / 1e12:>12.3f}" for _, s in steps))
  lines.append(f"  {'TFLOPs total':<24}" + "".join(
      f"{s.flops_total / 1e12:>12.3f}" for _, s in steps))
  lines.append(f"  {'compile seconds':<24}" + "".join(f"{s.compile_s:>12.2f}" for _, s in steps))
  memory = (f"{c.memory_gib} GiB (--memory_gib)" if c.memory_gib is not None
            else f"{acc.memory_gib} GiB ({acc.description})")
  verdict = "fits" if result.fits else "does not fit"
  spare = result.usable_bytes - result.peak_bytes
  label = "memory" if c.memory_gib is not None else c.accelerator
  lines += ["", f"{label}: {memory} per device, {100 * c.headroom:g}% headroom -> "
            f"usable {_gib(result.usable_bytes)} GiB; peak {_gib(result.peak_bytes)} GiB: "
            f"{verdict} ({_gib(abs(spare))} GiB {'to spare' if spare >= 0 else 'short'})."]
  if (c.microbatches or 1) > 1 or c.scan_layers:
    lines.append(f"note: {FLOPS_NOTE}")
  lines.append(f"note: {CPU_NOTE}")
  return "\n".join(lines)


# --- The command line -------------------------------------------------------------------------

def _mesh(text: str) -> tuple:
  try:
    data, model = (int(x) for x in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not DATAxMODEL, e.g. 4x4") from None
  return data, model


def _bool(text: str) -> bool:
  if text.lower() not in ("true", "false", "1", "0"):
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
  return text.lower() in ("true", "1")


# What --table searches itself: refused with --table (a flag nobody would read).
_SEARCHED = ("model", "mesh", "mode", "remat", "frozen_dtype", "microbatches", "accelerator",
             "memory_gib", "no_eval")


def parser() -> argparse.ArgumentParser:
  p = console.ArgumentParser(prog="python -m ptjax.plan", description=__doc__,
              formatter_class=argparse.RawDescriptionHelpFormatter)
  a = p.add_argument
  a("--model", help="T5 preset: tiny, small, base, large, xl, xxl, mini_* (default base).")
  a("--mesh", type=_mesh, help="DATAxMODEL devices, e.g. 4x4 (default 1x1).")
  a("--batch", type=int, default=32, help="Global batch (BATCH_SIZE), default 32 (the paper).")
  a("--inputs", type=int, default=512, help="Input tokens (TASK_FEATURE_LENGTHS['inputs']).")
  a("--targets", type=int, default=16, help="Target tokens (TASK_FEATURE_LENGTHS['targets']).")
  a("--prompt_length", type=int, help="Prompt rows (PROMPT_LENGTH): default 100, 0 when "
    "model tuning.")
  a("--mode", choices=MODES, help="What trains (TRAINABLE): the prompt, or every weight.")
  a("--remat", choices=REMATS, help="REMAT_POLICY (default none).")
  a("--activation_dtype", choices=DTYPES, default="bfloat16", help="ACTIVATION_DTYPE.")
  a("--frozen_dtype", choices=DTYPES, help="FROZEN_DTYPE (default float32).")
  a("--dropout_rate", type=float, default=0.1, help="DROPOUT_RATE (default 0.1, T5X's).")
  a("--microbatches", type=int, help="trainer.Trainer.num_microbatches.")
  a("--scan_layers", type=_bool, nargs="?", const=True,
    help="T5Config.scan_layers (left alone unless given).")
  a("--accelerator", help=f"Memory per device from a preset: {', '.join(ACCELERATORS)} "
    "(default v4).")
  a("--memory_gib", type=float, help="Memory per device in GiB (overrides --accelerator's).")
  a("--headroom", type=float, default=0.1, help="Fraction of memory kept free (default 0.1).")
  a("--no_eval", action="store_true", help="Compile the train step only.")
  a("--json", action="store_true", help="Print one JSON object instead of the report.")
  a("--table", action="store_true", help="Print docs/scale.md's table (slow: minutes per "
    "size on a laptop).")
  a("--sizes", help="--table: comma-separated presets (default small..xxl).")
  a("--slices", help="--table: comma-separated slices (default v3-32,v4-32,8xa100-80g,1xh200; "
    "also v5e-16, v5p-8, 8xh100).")
  return p


def _config(args) -> PlanConfig:
  given = {k: v for k, v in vars(args).items() if v is not None}
  fields = {f.name for f in dataclasses.fields(PlanConfig)}
  kwargs = {k: v for k, v in given.items() if k in fields}
  if args.no_eval:
    kwargs["eval_step"] = False
  return PlanConfig(**kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parser().parse_args(argv)
  prog = "python -m ptjax.plan"
  try:
    if args.table:
      searched = [f"--{k}" for k in _SEARCHED if getattr(args, k) not in (None, False)]
      if searched:
        raise ValueError(f"--table searches {', '.join(searched)} itself: drop it.")
      if args.json:
        raise ValueError("--table prints a markdown table, not JSON: drop --json.")
      from ptjax.plan_table import SLICES, TABLE_SIZES, TABLE_SLICES, table
      sizes = args.sizes.split(",") if args.sizes else TABLE_SIZES
      slices = args.slices.split(",") if args.slices else TABLE_SLICES
      base = _config(args)
      if base.scan_layers is None:  # Scanned: what XL / XXL want, and seconds to compile.
        base = dataclasses.replace(base, scan_layers=True)
      _start_cpu(max(SLICES[s].devices for s in slices if s in SLICES) if
                 all(s in SLICES for s in slices) else 1)
      tic = time.perf_counter()
      log = lambda line: print(line, file=sys.stderr, flush=True)
      text = table(base, sizes, slices, log)
      import jax
      command = " ".join(["python -m ptjax.plan", *(sys.argv[1:] if argv is None else argv)])
      print(f"<!-- {command}; jax {jax.__version__}; {time.strftime('%Y-%m-%d')}; "
            f"{time.perf_counter() - tic:.0f} s on {jax.device_count()} simulated CPU "
            f"devices -->")
      print(text)
      print(f"\nnote: {CPU_NOTE}")
      return 0
    if args.sizes or args.slices:
      raise ValueError("--sizes / --slices go with --table.")
    config = _config(args)
    _start_cpu(config.devices)
    result = plan(config)
  except ValueError as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(result.to_json()) if args.json else report(result))
  return 0 if result.fits else 1  # A launch script that stops on non-zero launches what fits.


def _start_cpu(devices: int):
  """Before JAX's backend starts: the CPU platform (not the host's TPU / GPU) with
  `devices` simulated devices."""
  import jax
  try:
    jax.config.update("jax_platforms", "cpu")
  except RuntimeError:
    pass  # Already started: `ensure_devices` says whether it will do.
  ensure_devices(devices)


def run():
  sys.exit(main())


if __name__ == "__main__":
  run()
