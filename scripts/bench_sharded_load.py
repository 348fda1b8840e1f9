"""Host memory and time of loading a frozen T5 checkpoint: sharded (each process reads only
its devices' blocks) vs the old way (every process reads the whole model into numpy, then
shards it). Prints ONE JSON object.

  python scripts/bench_sharded_load.py [--preset large] [--checkpoint PATH]
      [--processes 2] [--devices_per_process 4] [--mesh 1,8] [--dtype float32]

Without --checkpoint, a synthetic T5 1.1 checkpoint of the preset (random float32 values,
T5X format, zstd) is written to a temporary folder that is removed at the end. Each load
runs in fresh processes (jax.distributed over gloo CPU collectives, simulated CPU devices);
each process measures its peak RSS growth during the load alone: the kernel's high-water
mark (VmHWM) is reset through /proc/self/clear_refs after JAX's start, so the baseline
excludes the backend. Simulated CPU devices keep the loaded shards in process memory: a
process holding half of a model-parallel mesh ends at ~0.5x the float32 size.

`worker` mode (internal; tests/checkpoints/test_sharded_load.py uses it too) runs one process.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kib(field: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> int:
  """Resets the RSS high-water mark (Linux clear_refs '5'); returns the current RSS."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  return _kib("VmRSS")


def worker(args) -> dict:
  """One process: load `args.checkpoint` (sharded or the old way), measure, compare."""
  import gc  # pylint: disable=g-import-not-at-top
  import jax
  jax.config.update("jax_num_cpu_devices", args.devices_per_process)
  if args.processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{args.port}", args.processes, args.process_id)
  import numpy as np
  from ptjax.checkpoints import flat, load_checkpoint, open_reader
  from ptjax.model import param_axes, param_shapes, preset
  from ptjax.train import partitioning
  from ptjax.train.runs import _global

  config = preset(args.preset)
  mesh = partitioning.make_mesh(mesh_shape=tuple(int(x) for x in args.mesh.split(",")))
  # As setup_run: a dimension its mesh axes do not divide (base's 12 heads on 8) replicated.
  shardings = partitioning.logical_sharding(mesh, param_axes(config), param_shapes(config))
  dtype = None if args.dtype == "stored" else args.dtype
  open_reader(args.checkpoint).shapes()  # Imports and first-use costs out of the numbers.
  jax.block_until_ready(jax.device_put(np.zeros(8), shardings["decoder"]["decoder_norm"]
                                       ["scale"]))
  gc.collect()
  before = _reset_peak()
  start = time.perf_counter()
  if args.mode == "sharded":
    _, params = load_checkpoint(args.checkpoint, config, dtype=dtype, shardings=shardings)
  else:  # Before issue 18: the whole model in host numpy, then `runs._global`.
    _, host = load_checkpoint(args.checkpoint, config, dtype=dtype)
    params = _global(host, shardings)
    del host
  jax.block_until_ready(params)
  wall = time.perf_counter() - start
  peak = _kib("VmHWM")
  result = {"process": args.process_id, "rss_before_bytes": before,
            "peak_growth_bytes": peak - before, "wall_s": round(wall, 2)}
  if args.verify:  # Every addressable shard against the unsharded load, bit for bit.
    _, ref = load_checkpoint(args.checkpoint, config, dtype=dtype)
    ref, got = flat(ref), flat(params)
    same = set(ref) == set(got)
    for name, array in got.items():
      for shard in array.addressable_shards:
        block, want = np.asarray(shard.data), ref[name][shard.index]
        same &= (block.dtype == want.dtype and block.shape == want.shape
                 and block.tobytes() == want.tobytes())
    result["identical"] = bool(same)
  return result


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_load(checkpoint: str, mode: str, preset: str, processes: int = 2,
             devices_per_process: int = 4, mesh: str = "1,8", dtype: str = "stored",
             verify: bool = True, timeout: float = 1200,
             env: Optional[dict] = None) -> list[dict]:
  """Runs `processes` worker processes loading `checkpoint` (`env`: extra environment
  variables); their JSON results."""
  port = _free_port()
  env = {**os.environ, **(env or {}), "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), "worker", f"--checkpoint={checkpoint}",
       f"--mode={mode}", f"--preset={preset}", f"--processes={processes}",
       f"--process_id={i}", f"--devices_per_process={devices_per_process}", f"--mesh={mesh}",
       f"--dtype={dtype}", f"--port={port}", f"--verify={int(verify)}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
           for i in range(processes)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
      raise RuntimeError(f"worker failed ({p.returncode}):\n{err[-3000:]}")
    results.append(json.loads(out.strip().splitlines()[-1]))
  return results


def write_synthetic(preset: str, path: str, seed: int = 0, chunk_mib: int = 64) -> int:
  """A random float32 T5 1.1 checkpoint of `preset` at `path` (T5X format, zstd); returns
  its float32 bytes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import traverse_util
  from ptjax.checkpoints import flat, save_t5x
  from ptjax.model import param_shapes, preset as make
  rng = np.random.default_rng(seed)
  shapes = flat(param_shapes(make(preset)))
  params = {k: rng.standard_normal(v.shape, np.float32) for k, v in shapes.items()}
  save_t5x(traverse_util.unflatten_dict(params, sep="/"), path, compressor="zstd",
           chunk_bytes=chunk_mib * 2**20)
  return sum(v.nbytes for v in params.values())


def f32_bytes(preset: str) -> int:
  import math  # pylint: disable=g-import-not-at-top
  from ptjax.checkpoints import flat
  from ptjax.model import param_shapes, preset as make
  return 4 * sum(math.prod(v.shape) for v in flat(param_shapes(make(preset))).values())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("command", nargs="?", default="bench", choices=("bench", "worker"))
  parser.add_argument("--preset", default="large")
  parser.add_argument("--checkpoint")
  parser.add_argument("--chunk_mib", type=int, default=64,
                      help="zarr chunk size of the synthetic checkpoint (T5X: 64 MiB)")
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--mesh", default="1,8", help="data,model")
  parser.add_argument("--dtype", default="stored", help="'stored', 'float32' or 'bfloat16'")
  parser.add_argument("--verify", type=int, default=1)
  parser.add_argument("--mode", default="sharded", choices=("sharded", "unsharded"))
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  args = parser.parse_args(argv)
  if args.command == "worker":
    print(json.dumps(worker(args)), flush=True)
    return 0
  tmp = None
  try:
    checkpoint = args.checkpoint
    start = time.perf_counter()
    if checkpoint is None:
      tmp = tempfile.mkdtemp(prefix="bench_sharded_load_")
      checkpoint = os.path.join(tmp, "checkpoint_0")
      write_synthetic(args.preset, checkpoint, chunk_mib=args.chunk_mib)
    write_s = time.perf_counter() - start
    size = f32_bytes(args.preset)
    out = {"preset": args.preset, "checkpoint_f32_bytes": size,
           "processes": args.processes, "devices_per_process": args.devices_per_process,
           "mesh": args.mesh, "dtype": args.dtype,
           "chunk_mib": None if args.checkpoint else args.chunk_mib, "write_s": round(write_s, 1)}
    for mode in ("sharded", "unsharded"):
      results = run_load(checkpoint, mode, args.preset, args.processes,
                         args.devices_per_process, args.mesh, args.dtype,
                         verify=bool(args.verify) and mode == "sharded")
      out[mode] = {
          "peak_rss_growth_bytes": [r["peak_growth_bytes"] for r in results],
          "peak_rss_growth_ratio": [round(r["peak_growth_bytes"] / size, 3) for r in results],
          "wall_s": [r["wall_s"] for r in results]}
      if "identical" in results[0]:
        out["bit_identical"] = all(r["identical"] for r in results)
    print(json.dumps(out))
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
