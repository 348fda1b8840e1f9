"""Scanned <-> unscanned parameter layouts: tree conversions, `adapt`ed readers, convert."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from ptjax import convert
from ptjax.checkpoints import CheckpointError, load_checkpoint, save_t5x
from ptjax.checkpoints.layout import adapt, is_scanned, scan_params, to_layout, unscan_params
from ptjax.checkpoints.validate import flat
from ptjax.model import T5Config, param_shapes

# Different depths per stack, so a mixed-up stack shows.
CONFIG = T5Config(vocab_size=32, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=6,
                  num_encoder_layers=2, num_decoder_layers=3,
                  relative_attention_num_buckets=4, relative_attention_max_distance=8)
SCANNED = CONFIG.replace(scan_layers=True)
KEY = "encoder/encoder/attention/key/kernel"


@pytest.fixture(scope="module")
def tree():
  """Unscanned numpy params; decoder mlp/wo is bfloat16, so bit-exactness covers a half
  dtype."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                        param_shapes(CONFIG))
  for i in range(3):
    wo = params["decoder"][f"layers_{i}"]["mlp"]["wo"]
    wo["kernel"] = wo["kernel"].astype(ml_dtypes.bfloat16)
  return params


def _assert_trees_identical(got, want):
  got, want = flat(got), flat(want)
  assert sorted(got) == sorted(want)
  for name, value in want.items():
    assert got[name].dtype == value.dtype, name
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)


def test_scan_stacks_on_axis_1_and_round_trips_bit_exact(tree):
  scanned = scan_params(tree, CONFIG)
  f = flat(scanned)
  assert f[KEY].shape == (4, 2, 4)
  assert f["decoder/decoder/pre_mlp_layer_norm/scale"].shape == (4, 3)
  assert f["encoder/relpos_bias/rel_embedding"].shape == (2, 4)  # Shared: not stacked.
  assert not any("layers_" in name for name in f)
  for i in range(2):
    np.testing.assert_array_equal(f[KEY][:, i],
                                  tree["encoder"][f"layers_{i}"]["attention"]["key"]["kernel"])
  _assert_trees_identical(unscan_params(scanned, CONFIG), tree)
  # jax leaves stay jax arrays and convert the same way.
  jax_scanned = scan_params(jax.tree.map(jnp.asarray, tree))
  assert isinstance(flat(jax_scanned)[KEY], jax.Array)
  _assert_trees_identical(jax_scanned, scanned)
  assert to_layout(tree, False) is tree
  _assert_trees_identical(to_layout(scanned, False, CONFIG), tree)


def test_layout_errors(tree):
  scanned = scan_params(tree)
  assert is_scanned(flat(scanned)) and not is_scanned(flat(tree)) and not is_scanned([])
  with pytest.raises(CheckpointError, match=r"already scanned \(encoder/encoder/\.\.\.\); use"):
    scan_params(scanned)
  with pytest.raises(CheckpointError, match=r"not scanned"):
    unscan_params(tree)
  with pytest.raises(CheckpointError, match=r"mix the scanned .* and unscanned"):
    is_scanned(["encoder/encoder/mlp/wo/kernel", "encoder/layers_0/mlp/wo/kernel"])
  deeper = CONFIG.replace(num_decoder_layers=4)
  with pytest.raises(CheckpointError, match=r"decoder has layers \[0, 1, 2\] \(3\) but "
                     r"the model config expects layers_0\.\.layers_3"):
    scan_params(tree, deeper)
  with pytest.raises(CheckpointError, match=r"expects layers_0\.\.layers_3"):
    unscan_params(scanned, deeper)
  mixed = jax.tree.map(lambda a: a, tree)
  mixed["decoder"]["layers_1"]["mlp"]["wo"]["kernel"] = np.zeros((6, 4), np.float32)
  with pytest.raises(CheckpointError, match=r"^scan_params: the layers of decoder/decoder/mlp/"
                     r"wo/kernel differ \(bfloat16\[6, 4\], float32\[6, 4\]\) and cannot be "
                     r"stacked into one scanned array; cast them to one dtype first"):
    scan_params(mixed)


class FakeReader:
  """A dict-backed `CheckpointReader` that records every block it reads."""
  source = "fake://ckpt"

  def __init__(self, tree):
    self.arrays = flat(tree)
    self.reads = []

  def shapes(self):
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in self.arrays.items()}

  def read(self, name, index):
    self.reads.append((name, index))
    return np.array(self.arrays[name][index])


def test_adapt_same_layout_is_the_reader(tree):
  reader = FakeReader(tree)
  assert adapt(reader, CONFIG) is reader
  scanned = FakeReader(scan_params(tree))
  assert adapt(scanned, SCANNED) is scanned


def test_adapt_unscanned_checkpoint_into_scanned_model(tree):
  want = flat(scan_params(tree))
  reader = FakeReader(tree)
  adapted = adapt(reader, SCANNED)
  assert adapted.source == "fake://ckpt"
  assert adapted.shapes() == {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in want.items()}
  index = (slice(1, 3), slice(1, 2), slice(0, 4, 2))
  np.testing.assert_array_equal(adapted.read(KEY, index), want[KEY][index])
  # Only the asked-for layer, and only its block, was read.
  assert reader.reads == [("encoder/layers_1/attention/key/kernel",
                           (slice(1, 3), slice(0, 4, 2)))]
  wo = "decoder/decoder/mlp/wo/kernel"
  full = (slice(None),) * 3
  got = adapted.read(wo, full)
  assert got.dtype == want[wo].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(got, want[wo])
  scale = "decoder/decoder/pre_mlp_layer_norm/scale"
  np.testing.assert_array_equal(adapted.read(scale, (slice(2, 4), slice(0, 3, 2))),
                                want[scale][2:4, 0:3:2])
  assert adapted.read(scale, (slice(None), slice(3, 3))).shape == (4, 0)
  name = "encoder/relpos_bias/rel_embedding"
  np.testing.assert_array_equal(adapted.read(name, (slice(None),) * 2), want[name])
  with pytest.raises(ValueError, match=r"give one slice per dimension of its shape \(4, 2, 4\)"):
    adapted.read(KEY, (slice(None),))
  with pytest.raises(CheckpointError, match=r"no parameter encoder/layers_0/attention/key"):
    adapted.read("encoder/layers_0/attention/key/kernel", (slice(None),) * 2)


def test_adapt_scanned_checkpoint_into_unscanned_model(tree):
  reader = FakeReader(scan_params(tree))
  adapted = adapt(reader, CONFIG)
  want = flat(tree)
  assert adapted.shapes() == {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in want.items()}
  name = "decoder/layers_2/self_attention/out/kernel"
  index = (slice(0, 3), slice(1, 4))
  np.testing.assert_array_equal(adapted.read(name, index), want[name][index])
  assert reader.reads == [("decoder/decoder/self_attention/out/kernel",
                           (slice(0, 3), slice(2, 3), slice(1, 4)))]
  for name, value in want.items():
    np.testing.assert_array_equal(adapted.read(name, (slice(None),) * value.ndim), value)


def _flaxformer_per_layer(tree, tables):
  """The scanned tree as flaxformer would write it: one relpos table per encoder layer."""
  scanned = flat(scan_params(tree))
  scanned.pop("encoder/relpos_bias/rel_embedding")
  scanned["encoder/encoder/relpos_bias/rel_embedding"] = np.stack(tables, axis=1)
  return traverse_util.unflatten_dict(scanned, sep="/")


def test_flaxformer_per_layer_relpos_equal_is_taken_different_is_refused(tree):
  table = tree["encoder"]["relpos_bias"]["rel_embedding"]
  same = _flaxformer_per_layer(tree, [table, table])
  _assert_trees_identical(unscan_params(same), tree)
  _assert_trees_identical(to_layout(same, True), scan_params(tree))
  for config in (CONFIG, SCANNED):
    adapted = adapt(FakeReader(same), config)
    assert "encoder/encoder/relpos_bias/rel_embedding" not in adapted.shapes()
    np.testing.assert_array_equal(
        adapted.read("encoder/relpos_bias/rel_embedding", (slice(None),) * 2), table)
  different = _flaxformer_per_layer(tree, [table, table + 1])
  message = (r"^fake://ckpt: encoder/encoder/relpos_bias/rel_embedding holds a different "
             r"relative-position table per layer \(flaxformer's scanned mode\); ptjax's T5 1.1 "
             r"shares one table per stack, so this checkpoint is a different architecture and "
             r"cannot be loaded\.$")
  with pytest.raises(CheckpointError, match=message):
    adapt(FakeReader(different), CONFIG)
  with pytest.raises(CheckpointError, match=r"holds a different relative-position table"):
    unscan_params(different)


@pytest.fixture(scope="module")
def unscanned_ckpt(tree, tmp_path_factory):
  return save_t5x(tree, str(tmp_path_factory.mktemp("ckpt") / "checkpoint_7"), step=7)


def _convert(*args):
  assert convert.main([str(a) for a in args]) == 0


def _config_json(folder):
  """CONFIG as a T5Config JSON file (convert's --config for T5X -> HF)."""
  path = folder / "config.json"
  path.write_text(json.dumps({"vocab_size": 32, "emb_dim": 4, "num_heads": 2, "head_dim": 2,
                              "mlp_dim": 6, "num_encoder_layers": 2, "num_decoder_layers": 3,
                              "relative_attention_num_buckets": 4,
                              "relative_attention_max_distance": 8}))
  return path


def test_convert_layout_both_ways_bit_exact(tree, unscanned_ckpt, tmp_path, capsys):
  _convert("--input", unscanned_ckpt, "--output", tmp_path / "s", "--format", "t5x",
           "--layout", "scanned")
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert (summary["input_layout"], summary["layout"]) == ("unscanned", "scanned")
  _, scanned = load_checkpoint(str(tmp_path / "s"), SCANNED)
  _assert_trees_identical(scanned, scan_params(tree))
  # Default: keep the input's layout.
  _convert("--input", tmp_path / "s", "--output", tmp_path / "s2", "--format", "t5x")
  _assert_trees_identical(load_checkpoint(str(tmp_path / "s2"))[1], scanned)
  _convert("--input", tmp_path / "s", "--output", tmp_path / "u", "--format", "t5x",
           "--layout", "unscanned")
  _assert_trees_identical(load_checkpoint(str(tmp_path / "u"), CONFIG)[1], tree)
  # HF is always unscanned: a scanned T5X input is unscanned on the way.
  config_file = _config_json(tmp_path)
  _convert("--input", tmp_path / "s", "--output", tmp_path / "hf", "--format", "hf",
           "--config", config_file)
  hf_config, from_hf = load_checkpoint(str(tmp_path / "hf"))
  assert hf_config == CONFIG
  _assert_trees_identical(from_hf, tree)
  # HF -> scanned T5X.
  _convert("--input", tmp_path / "hf", "--output", tmp_path / "hs", "--format", "t5x",
           "--layout", "scanned")
  _assert_trees_identical(load_checkpoint(str(tmp_path / "hs"), SCANNED)[1],
                          scan_params(from_hf))


def test_convert_layout_request_and_errors(unscanned_ckpt, tmp_path, capsys):
  args = ["--input", unscanned_ckpt, "--output", tmp_path / "s", "--format", "t5x",
          "--layout", "scanned"]
  _convert(*args)
  _convert(*args)  # The same command again replaces its own output.
  assert json.loads((tmp_path / "s" / "ptjax_convert.json").read_text())["layout"] == "scanned"
  capsys.readouterr()
  assert convert.main([str(a) for a in args[:-1]] + ["unscanned"]) == 2
  assert "already exists and is not empty" in capsys.readouterr().err
  assert convert.main(["--input", unscanned_ckpt, "--output", str(tmp_path / "h"),
                       "--format", "hf", "--config", "tiny", "--layout", "scanned"]) == 2
  assert "Hugging Face T5 has no scanned layout" in capsys.readouterr().err
  (tmp_path / "c.json").write_text(json.dumps({"scan_layers": True}))
  assert convert.main(["--input", unscanned_ckpt, "--output", str(tmp_path / "x"),
                       "--format", "t5x", "--config", str(tmp_path / "c.json")]) == 2
  assert "sets scan_layers" in capsys.readouterr().err


def test_a_t5x_checkpoint_written_by_t5x_loads_into_a_scanned_run():
  """The real T5X fixture (unscanned, zarr leaves) read straight into a scanned model's
  shardings (`setup_run` -> `layout.adapt` over the TensorStore reader) and into host
  numpy (`load_checkpoint` -> `to_layout`): both are `scan_params` of the unscanned load,
  bit for bit, and the scanned run's loss is the unscanned run's."""
  import jax
  from conftest import TENSORSTORE_CKPT, TENSORSTORE_CONFIG, shared_fixture
  from ptjax.checkpoints import load_checkpoint
  from ptjax.checkpoints.layout import scan_params
  from ptjax.train import optim, partitioning
  from ptjax.train.runs import setup_run
  from ptjax.train.step import LossConfig, _loss

  path = shared_fixture(TENSORSTORE_CKPT)
  scanned_config = TENSORSTORE_CONFIG.replace(scan_layers=True)
  _, plain = load_checkpoint(path, TENSORSTORE_CONFIG)
  _, host = load_checkpoint(path, scanned_config)
  want = flat(scan_params(plain, TENSORSTORE_CONFIG))
  assert {k: (v.dtype, v.tobytes()) for k, v in flat(host).items()} == \
      {k: (v.dtype, v.tobytes()) for k, v in want.items()}
  mesh = partitioning.make_mesh(1, devices=jax.devices()[:1])
  runs = {}
  for config in (TENSORSTORE_CONFIG, scanned_config):
    runs[config.scan_layers] = setup_run(config, path, 3, None, optim.PROMPT_ONLY, mesh)
  got = flat(runs[True].frozen["params"])
  assert {k: np.asarray(v).tobytes() for k, v in got.items()} == \
      {k: v.tobytes() for k, v in want.items()}
  batch = {"encoder_input_tokens": np.array([[5, 6, 7, 1]], np.int32),
           "decoder_input_tokens": np.array([[0, 9, 8]], np.int32),
           "decoder_target_tokens": np.array([[9, 8, 1]], np.int32)}
  losses = [float(_loss(r.model, LossConfig(), r.trainable, r.frozen, batch, None)[0])
            for r in (runs[False], runs[True])]
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def test_convert_overwrite_replaces_the_earlier_checkpoint_and_keeps_other_files(
    tree, unscanned_ckpt, tmp_path):
  out = tmp_path / "out"
  _convert("--input", unscanned_ckpt, "--output", out, "--format", "t5x")
  (out / "notes.txt").write_text("mine")
  before = sorted(p.name for p in out.iterdir())
  assert any(n.startswith("target.encoder.layers_0.") for n in before)
  _convert("--input", unscanned_ckpt, "--output", out, "--format", "t5x", "--layout",
           "scanned", "--overwrite")
  after = sorted(p.name for p in out.iterdir())
  assert not any(".layers_" in n for n in after), after  # No stale unscanned arrays.
  assert "notes.txt" in after and (out / "notes.txt").read_text() == "mine"
  _assert_trees_identical(load_checkpoint(str(out), SCANNED)[1], scan_params(tree))
  # HF over T5X: no T5X file is left beside the HF one.
  hf_config = _config_json(tmp_path)
  _convert("--input", unscanned_ckpt, "--output", out, "--format", "hf", "--config",
           hf_config, "--overwrite")
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors",
                                                   "notes.txt", "ptjax_convert.json"]
