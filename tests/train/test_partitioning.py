"""Parameter shardings: T5X's logical rules, with dimensions the mesh cannot split evenly
replicated (JAX refuses uneven shards)."""

import jax
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from ptjax.model import param_axes, param_shapes, preset
from ptjax.train import partitioning


def test_a_dimension_the_model_axis_does_not_divide_is_replicated_and_only_it():
  config = preset("base")  # 12 heads: 8 model shards cannot split relpos_bias [12, 32].
  mesh = jax.sharding.AbstractMesh((1, 8), ("data", "model"))
  plain = traverse_util.flatten_dict(
      partitioning.logical_sharding(mesh, param_axes(config)), sep="/")
  even = traverse_util.flatten_dict(
      partitioning.logical_sharding(mesh, param_axes(config), param_shapes(config)), sep="/")
  changed = {k: (plain[k].spec, even[k].spec) for k in plain if plain[k].spec != even[k].spec}
  assert changed == {
      "encoder/relpos_bias/rel_embedding": (P("model", None), P(None, None)),
      "decoder/relpos_bias/rel_embedding": (P("model", None), P(None, None))}
  shapes = traverse_util.flatten_dict(param_shapes(config), sep="/")
  for name, sharding in even.items():  # Every shard now has one shape: JAX accepts it.
    for dim, axis in zip(shapes[name].shape, sharding.spec):
      assert axis is None or dim % mesh.shape[axis] == 0, name
  # Query / key / value kernels [768, 768] still split 8 ways over joined_kv.
  assert even["encoder/layers_0/attention/query/kernel"].spec == P(None, "model")
