"""Device mesh, logical-axis rules and shardings (T5X's 1-D/2-D data x model layout).

Logical names on parameters and activations are mapped to the mesh axes `data` and
`model` by `LOGICAL_AXIS_RULES`; a name mapped to None is replicated.
"""

import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# T5X's standard rules (model parallelism over vocab / mlp / heads) plus the prompt axes,
# which stay replicated: a prompt is tiny and every data shard needs all of it.
LOGICAL_AXIS_RULES = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("joined_kv", "model"),
    ("relpos_buckets", None),
    ("length", None),
    ("prompt", None),
    ("prompt_embed", None),
    ("layers", None),  # Scanned stacks (T5Config.scan_layers): every device holds all layers.
)


def make_mesh(num_partitions: int = 1, mesh_shape: Optional[Sequence[int]] = None,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A ('data', 'model') mesh over all devices: `num_partitions` model shards, the rest
  data parallel; or an explicit `mesh_shape` (data, model)."""
  devices = list(devices if devices is not None else jax.devices())
  if mesh_shape is None:
    if len(devices) % num_partitions:
      raise ValueError(f"NUM_PARTITIONS={num_partitions} does not divide the "
                       f"{len(devices)} devices.")
    mesh_shape = (len(devices) // num_partitions, num_partitions)
  if int(np.prod(mesh_shape)) != len(devices):
    raise ValueError(f"MESH_SHAPE={tuple(mesh_shape)} needs {int(np.prod(mesh_shape))} "
                     f"devices, found {len(devices)}.")
  return Mesh(np.asarray(devices, dtype=object).reshape(mesh_shape), ("data", "model"))


@dataclasses.dataclass(frozen=True)
class PjitPartitioner:
  """How the devices are laid out (T5X's `partitioning.PjitPartitioner`).

  Attributes:
    num_partitions: model-parallel shards (NUM_PARTITIONS); the other devices are data
      parallel. T5X's meaning.
    model_parallel_submesh: T5X's TPU-topology form of the same thing, e.g. (2, 2, 1, 2);
      ptjax takes its product as `num_partitions` (its devices are laid out by
      `jax.devices()` order, not by the submesh's torus shape). Give one or the other.
    mesh_shape: ptjax's explicit (data, model) shape (MESH_SHAPE), overrides both.
  """
  num_partitions: int = 1
  model_parallel_submesh: Optional[Sequence[int]] = None
  mesh_shape: Optional[Sequence[int]] = None

  def __post_init__(self):
    if not isinstance(self.num_partitions, int) or self.num_partitions <= 0:
      raise ValueError(f"NUM_PARTITIONS={self.num_partitions!r} must be a positive integer.")
    if self.model_parallel_submesh is not None and self.num_partitions != 1:
      raise ValueError("partitioning.PjitPartitioner: give num_partitions "
                       "(NUM_PARTITIONS) or model_parallel_submesh, not both.")

  def mesh(self, devices: Optional[Sequence[Any]] = None) -> Mesh:
    parts = self.num_partitions
    if self.model_parallel_submesh is not None:
      parts = int(np.prod(self.model_parallel_submesh))
    return make_mesh(parts, self.mesh_shape, devices)


def logical_sharding(mesh: Mesh, logical_specs: Any, shapes: Any = None) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`.

  `shapes` (the same tree of arrays / ShapeDtypeStructs): a dimension that the mesh axes of
  its rule do not divide evenly is replicated instead (JAX refuses uneven shards), e.g.
  base's 12 heads of `relpos_bias` on 8 model shards; XLA's GSPMD would pad them. Only that
  parameter's layout changes; the maths does not.
  """
  shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, LOGICAL_AXIS_RULES)
  if shapes is None:
    return shardings
  return jax.tree.map(lambda s, x: _evenly(s, tuple(x.shape)), shardings, shapes)


def _evenly(sharding: NamedSharding, shape: tuple) -> NamedSharding:
  spec = []
  for i, dim in enumerate(shape):
    axis = sharding.spec[i] if i < len(sharding.spec) else None
    names = axis if isinstance(axis, tuple) else (axis,)
    parts = int(np.prod([sharding.mesh.shape[n] for n in names if n is not None]))
    spec.append(axis if dim % parts == 0 else None)
  return NamedSharding(sharding.mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch arrays [batch, ...]: split over `data`."""
  return NamedSharding(mesh, P("data"))


def axis_rules():
  """Context manager activating the rules for `nn.with_logical_constraint` in the model."""
  return nn.logical_axis_rules(LOGICAL_AXIS_RULES)
