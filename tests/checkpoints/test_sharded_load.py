"""Sharded, streaming load of frozen checkpoints (`load_checkpoint(shardings=...)`): each
process reads only its devices' blocks, bit-identical to the whole-tree load.

Multi-device checks run in subprocesses (the pytest process has one CPU device): this file
run as a script is the 8-device parity worker; scripts/bench_sharded_load.py the 2-process
worker of the acceptance test."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ptjax import prompts
from ptjax.checkpoints import CheckpointError, flat, load_checkpoint, save_hf, save_t5x
from ptjax.model import T5Config, init_params, param_axes
from ptjax.train import optim, partitioning, runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_sharded_load as bench  # noqa: E402  pylint: disable=g-import-not-at-top

# Every sharded dimension divisible by 8 model shards.
CONFIG = T5Config(vocab_size=64, emb_dim=16, num_heads=8, head_dim=4, mlp_dim=32,
                  num_encoder_layers=2, num_decoder_layers=2)


def _params():
  return jax.tree.map(np.asarray, init_params(CONFIG, jax.random.PRNGKey(0)))


def parity_worker(folder: str) -> None:
  """8 CPU devices: T5X and HF (float32 and bfloat16-stored), restore dtypes, 3 meshes."""
  params = _params()
  save_t5x(params, f"{folder}/t5x", chunk_bytes=256)  # Several chunks per array.
  save_hf(params, CONFIG, f"{folder}/hf")
  save_hf(params, CONFIG, f"{folder}/hf_bf16", dtype="bfloat16")
  checked = 0
  for shape in [(1, 8), (8, 1), (2, 4)]:
    mesh = partitioning.make_mesh(mesh_shape=shape)
    shardings = partitioning.logical_sharding(mesh, param_axes(CONFIG))
    for fmt in ("t5x", "hf", "hf_bf16"):
      for dtype in (None, "bfloat16", "float32"):
        _, want = load_checkpoint(f"{folder}/{fmt}", CONFIG, dtype=dtype)
        _, got = load_checkpoint(f"{folder}/{fmt}", CONFIG, dtype=dtype, shardings=shardings)
        for name, array in flat(want).items():
          g = flat(got)[name]
          assert g.sharding == flat(shardings)[name], name
          assert g.dtype == array.dtype and np.asarray(g).tobytes() == array.tobytes(), name
          checked += 1
  print(f"PARITY OK {checked}")


def test_8_devices_t5x_hf_bfloat16_bit_identical_to_unsharded(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  n = len(flat(param_axes(CONFIG)))
  assert f"PARITY OK {3 * 3 * 3 * n}" in out.stdout


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory):
  """A random float32 T5 1.1 base (990 MB float32), T5X format, zstd, 8 MiB chunks."""
  path = str(tmp_path_factory.mktemp("base") / "checkpoint_0")
  size = bench.write_synthetic("base", path, chunk_mib=8)
  return path, size


def test_two_processes_base_read_only_their_half_and_match(base_checkpoint):
  """ACCEPTANCE: 2 processes x 4 CPU devices, mesh (1, 8): each process's peak RSS growth
  while loading <= 0.6x the float32 checkpoint (its devices alone hold ~0.5x), and every
  shard bit-identical to the unsharded load. glibc's mmap threshold is pinned (1 MiB) so
  freed blocks go back to the OS instead of its dynamic threshold keeping them resident."""
  path, size = base_checkpoint
  results = bench.run_load(path, "sharded", "base", env={"MALLOC_MMAP_THRESHOLD_": "1048576"})
  print(results)
  for r in results:
    assert r["identical"]
    assert r["peak_growth_bytes"] <= 0.6 * size, (r, size)


@pytest.fixture
def tiny_t5x(tmp_path):
  path = str(tmp_path / "ckpt")
  save_t5x(_params(), path, chunk_bytes=256)
  return path


def _one_device_shardings():
  mesh = partitioning.make_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
  return partitioning.logical_sharding(mesh, param_axes(CONFIG))


def test_missing_chunk_is_one_line_error_never_zeros(tiny_t5x):
  folder = os.path.join(tiny_t5x, "target.encoder.layers_0.mlp.wo.kernel")
  os.remove(os.path.join(folder, sorted(f for f in os.listdir(folder) if f[0].isdigit())[-1]))
  with pytest.raises(CheckpointError) as e:
    load_checkpoint(tiny_t5x, CONFIG, shardings=_one_device_shardings())
  assert "encoder/layers_0/mlp/wo/kernel cannot be read" in str(e.value)
  assert "\n" not in str(e.value)


def test_config_mismatch_fails_before_any_read(tiny_t5x):
  folder = os.path.join(tiny_t5x, "target.encoder.layers_0.mlp.wo.kernel")
  for f in os.listdir(folder):
    if f[0].isdigit():
      os.remove(os.path.join(folder, f))  # A read would fail on this.
  wider = T5Config(**{**CONFIG.__dict__, "mlp_dim": 64})
  mesh = partitioning.make_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
  with pytest.raises(CheckpointError, match="has shape .* but the model config expects"):
    load_checkpoint(tiny_t5x, wider,
                    shardings=partitioning.logical_sharding(mesh, param_axes(wider)))


def test_shardings_tree_must_match_the_parameters(tiny_t5x):
  shardings = flat(_one_device_shardings())
  del shardings["decoder/decoder_norm/scale"]
  with pytest.raises(CheckpointError, match="differ at decoder/decoder_norm/scale"):
    load_checkpoint(tiny_t5x, CONFIG, shardings=shardings)


def _spy(monkeypatch):
  calls = []

  def spy(*args, **kwargs):
    calls.append(kwargs)
    return load_checkpoint(*args, **kwargs)
  monkeypatch.setattr(runs, "load_checkpoint", spy)
  return calls


def test_prompt_inits_read_the_embedding_only_when_they_use_it(tiny_t5x, monkeypatch):
  mesh = partitioning.make_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
  calls = _spy(monkeypatch)
  runs.setup_run(CONFIG, tiny_t5x, 4, prompts.random_uniform(), optim.PROMPT_ONLY, mesh)
  assert [c.get("names") for c in calls] == [None] and calls[0]["shardings"] is not None
  calls.clear()
  run = runs.setup_run(CONFIG, tiny_t5x, 4, prompts.sampled_vocab(), optim.PROMPT_ONLY, mesh)
  assert [c.get("names") for c in calls] == [None, ["token_embedder/embedding"]]
  assert calls[1].get("shardings") is None
  rows = np.asarray(run.trainable["prompt"]["prompt"])
  table = _params()["token_embedder"]["embedding"]
  assert all(any(np.array_equal(r, t) for t in table) for r in rows)


def test_bfloat16_restore_keeps_model_tuned_weights_float32(tiny_t5x):
  mesh = partitioning.make_mesh(mesh_shape=(1, 1), devices=jax.devices()[:1])
  run = runs.setup_run(CONFIG, tiny_t5x, 0, None, [r"params/decoder/.*"], mesh,
                       dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(run.trainable)} == {np.dtype("float32")}
  assert {x.dtype.name for x in jax.tree.leaves(run.frozen)} == {"bfloat16"}
  want = flat(_params())
  for name, x in flat(run.trainable["params"]).items():
    assert np.asarray(x).tobytes() == want[f"{name}"].tobytes()
  random = runs.setup_run(CONFIG, None, 0, None, [r"params/decoder/.*"], mesh,
                          dtype="bfloat16")
  assert {x.dtype.name for x in jax.tree.leaves(random.frozen)} == {"bfloat16"}
  assert {x.dtype.name for x in jax.tree.leaves(random.trainable)} == {"float32"}


if __name__ == "__main__":
  parity_worker(sys.argv[1])
