"""Scanned and unscanned parameter layouts of the layer stacks, and conversions both ways.

Unscanned (T5X's default, `T5Config.scan_layers=False`): one subtree per layer,
`encoder/layers_{i}/...`, `decoder/layers_{i}/...`.
Scanned (flaxformer t5_architecture `_construct_scanned_encoder/decoder`, T5X's scalable
T5, `scan_layers=True`): one subtree per stack, `encoder/encoder/...`,
`decoder/decoder/...`, every leaf with a stacked 'layers' axis inserted at position 1
(flaxformer's default `scan_axis=1`): kernel [embed, joined_kv] -> [embed, layers,
joined_kv], scale [embed] -> [embed, layers].

Conversions only stack and slice: bit-exact, no arithmetic, any dtype. The shared
relative-position table of a stack (`encoder/relpos_bias/rel_embedding`, T5 1.1) is the
same in both layouts. flaxformer's own scanned mode refuses shared biases and keeps one
table per layer inside the scanned subtree (`encoder/encoder/relpos_bias/rel_embedding`
[heads, layers, buckets]); ptjax takes such a checkpoint only when every layer's table is
equal (then it is the shared one) and refuses it otherwise, in one line.
"""

import re
from typing import Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ptjax.checkpoints.reader import CheckpointReader
from ptjax.checkpoints.validate import CheckpointError, flat
from ptjax.model import T5Config

SCAN_AXIS = 1  # flaxformer's default scan_axis; ptjax.model.network.SCAN_AXIS.
STACKS = ("encoder", "decoder")
_UNSCANNED = re.compile(r"^(encoder|decoder)/layers_(\d+)/(.+)$")
_SCANNED = re.compile(r"^(encoder|decoder)/(encoder|decoder)/(.+)$")
_PER_LAYER_RELPOS = "relpos_bias/rel_embedding"


def _scanned_match(name: str):
  m = _SCANNED.match(name)
  return m if m and m[1] == m[2] else None


def has_layers(names: Iterable[str]) -> bool:
  """Whether flat parameter names include layer weights (in either layout): what a
  checkpoint saves in the run's layout (a run that trains them resumes only in it)."""
  return any(_UNSCANNED.match(n) or _scanned_match(n) for n in names)


def is_scanned(names: Iterable[str]) -> bool:
  """Whether flat parameter names are in the scanned layout (`encoder/encoder/...`).

  False for the unscanned layout and for a tree with no layers. Raises CheckpointError
  for a tree that mixes both layouts.
  """
  names = list(names)
  scanned = any(_scanned_match(n) for n in names)
  if scanned and any(_UNSCANNED.match(n) for n in names):
    example = next(n for n in names if _UNSCANNED.match(n))
    raise CheckpointError(f"Parameters mix the scanned (encoder/encoder/...) and unscanned "
                          f"({example}) layouts; convert from one consistent checkpoint.")
  return scanned


def _stack_leaves(leaves: list, name: str, source: str):
  """Stacks on SCAN_AXIS: numpy -> numpy, jax -> jax, ShapeDtypeStruct -> its shape.

  Layers must agree in shape and dtype (a stacked leaf has one dtype; promoting would not
  be bit-exact): CheckpointError otherwise."""
  first = leaves[0]
  kinds = {(tuple(leaf.shape), np.dtype(leaf.dtype)) for leaf in leaves}
  if len(kinds) > 1:
    found = ", ".join(sorted(f"{np.dtype(d).name}{list(s)}" for s, d in kinds))
    raise CheckpointError(f"{source}: the layers of {name} differ ({found}) and cannot be "
                          f"stacked into one scanned array; cast them to one dtype first "
                          f"(e.g. convert --dtype).")
  if isinstance(first, jax.ShapeDtypeStruct):
    shape = first.shape[:SCAN_AXIS] + (len(leaves),) + first.shape[SCAN_AXIS:]
    return jax.ShapeDtypeStruct(shape, first.dtype)
  xp = jnp if isinstance(first, jax.Array) else np
  return xp.stack(leaves, axis=SCAN_AXIS)


def _layer_of(leaf, i: int):
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(leaf.shape[:SCAN_AXIS] + leaf.shape[SCAN_AXIS + 1:],
                                leaf.dtype)
  xp = jnp if isinstance(leaf, jax.Array) else np
  return xp.take(leaf, i, axis=SCAN_AXIS)


def _num_layers(config: Optional[T5Config], stack: str) -> Optional[int]:
  if config is None:
    return None
  return config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers


def _check_layers(stack: str, found: Iterable[int], config: Optional[T5Config],
                  source: str) -> int:
  """The layer count of `stack`: indices must be 0..n-1 and n the config's."""
  found = sorted(set(found))
  expected = _num_layers(config, stack)
  n = expected if expected is not None else len(found)
  if found != list(range(n)):
    raise CheckpointError(
        f"{source}: {stack} has layers {found[:3]}{'...' if len(found) > 3 else ''} "
        f"({len(found)}) but the model config expects layers_0..layers_{n - 1}; pick the "
        f"config that matches the checkpoint.")
  return n


def _shared_relpos(stack: str, table, source: str):
  """flaxformer's per-layer table [heads, layers, buckets] -> the shared [heads, buckets]
  when every layer's is equal; CheckpointError otherwise."""
  table_np = np.asarray(table)
  first = np.take(table_np, 0, axis=SCAN_AXIS)
  for i in range(1, table_np.shape[SCAN_AXIS]):
    if not np.array_equal(np.take(table_np, i, axis=SCAN_AXIS), first):
      raise CheckpointError(
          f"{source}: {stack}/{stack}/{_PER_LAYER_RELPOS} holds a different relative-position "
          f"table per layer (flaxformer's scanned mode); ptjax's T5 1.1 shares one table "
          f"per stack, so this checkpoint is a different architecture and cannot be loaded.")
  return _layer_of(table, 0)


def _collapse_relpos(tree: dict, source: str) -> dict:
  """Replaces flaxformer's per-layer relpos tables of a flat scanned tree by shared ones."""
  tree = dict(tree)
  for stack in STACKS:
    per_layer = f"{stack}/{stack}/{_PER_LAYER_RELPOS}"
    if per_layer not in tree:
      continue
    shared = f"{stack}/{_PER_LAYER_RELPOS}"
    if shared in tree:
      raise CheckpointError(f"{source}: both {shared} and {per_layer}; a checkpoint has one "
                            f"relative-position table per stack or one per layer, not both.")
    tree[shared] = _shared_relpos(stack, tree.pop(per_layer), source)
  return tree


def scan_params(params: dict, config: Optional[T5Config] = None,
                source: str = "scan_params") -> dict:
  """Unscanned tree -> scanned tree (nested dicts; numpy, jax or ShapeDtypeStruct leaves).

  `encoder/layers_{i}/<path>` [*s] -> `encoder/encoder/<path>` [s0, layers, *s[1:]] by
  stacking (bit-exact). Other parameters pass through. `config` (optional) checks the
  layer counts; without it they are read from the tree. CheckpointError for a tree that
  is already scanned or has a gap in its layers.
  """
  tree = flat(params)
  if is_scanned(tree):
    raise CheckpointError(f"{source}: the parameters are already scanned "
                          f"(encoder/encoder/...); use them as they are.")
  groups, out = {}, {}
  for name, leaf in tree.items():
    m = _UNSCANNED.match(name)
    if m:
      groups.setdefault((m[1], m[3]), {})[int(m[2])] = leaf
    else:
      out[name] = leaf
  counts = {stack: _check_layers(stack, [i for (s, _), d in groups.items() if s == stack
                                         for i in d], config, source)
            for stack in {s for s, _ in groups}}
  for (stack, path), by_layer in groups.items():
    if sorted(by_layer) != list(range(counts[stack])):
      raise CheckpointError(f"{source}: {stack}/layers_*/{path} is missing in some layers; "
                            f"every layer must have the same parameters.")
    name = f"{stack}/{stack}/{path}"
    out[name] = _stack_leaves([by_layer[i] for i in sorted(by_layer)], name, source)
  return traverse_util.unflatten_dict(out, sep="/")


def unscan_params(params: dict, config: Optional[T5Config] = None,
                  source: str = "unscan_params") -> dict:
  """Scanned tree -> unscanned tree: `encoder/encoder/<path>` [s0, layers, *s] ->
  `encoder/layers_{i}/<path>` [s0, *s], by slicing (bit-exact). flaxformer's per-layer
  relpos tables become the shared one when all equal (CheckpointError otherwise).
  `config` (optional) checks the layer counts. CheckpointError for an unscanned tree.
  """
  tree = flat(params)
  if tree and not is_scanned(tree):
    raise CheckpointError(f"{source}: the parameters are not scanned (no encoder/encoder/"
                          f"...); use them as they are.")
  out = {}
  for name, leaf in _collapse_relpos(tree, source).items():
    m = _scanned_match(name)
    if not m:
      out[name] = leaf
      continue
    n = _check_layers(m[1], range(leaf.shape[SCAN_AXIS]), config, source)
    for i in range(n):
      out[f"{m[1]}/layers_{i}/{m[3]}"] = _layer_of(leaf, i)
  return traverse_util.unflatten_dict(out, sep="/")


def to_layout(params: dict, scanned: bool, config: Optional[T5Config] = None,
              source: str = "parameters") -> dict:
  """`params` in the scanned or unscanned layout, whichever it is in now (per-layer
  flaxformer relpos tables collapsed either way)."""
  tree = flat(params)
  if is_scanned(tree):
    if scanned:
      return traverse_util.unflatten_dict(_collapse_relpos(tree, source), sep="/")
    return unscan_params(params, config, source)
  return scan_params(params, config, source) if scanned else params


def adapt(reader: CheckpointReader, config: T5Config) -> CheckpointReader:
  """A reader presenting `reader`'s checkpoint in the layout `config.scan_layers` asks for.

  Same layout (and no per-layer relpos tables): `reader` itself. Unscanned checkpoint,
  scanned model: `read('encoder/encoder/<path>', (s0, s_layers, *rest))` reads block
  (s0, *rest) of each `encoder/layers_{i}/<path>` with i in s_layers and stacks them on
  axis 1. Scanned checkpoint, unscanned model: `read('encoder/layers_3/<path>', (s0,
  *rest))` reads block (s0, 3:4, *rest) of `encoder/encoder/<path>`, without axis 1.
  flaxformer per-layer relpos tables are read (small) and checked now: CheckpointError
  unless all equal.
  """
  names = reader.shapes()
  scanned = is_scanned(names)
  per_layer = any(f"{s}/{s}/{_PER_LAYER_RELPOS}" in names for s in STACKS)
  if scanned == config.scan_layers and not per_layer:
    return reader
  return _LayoutReader(reader, config, scanned)


def _check_index(name: str, index: tuple, shape: tuple) -> tuple:
  index = tuple(index)
  if len(index) != len(shape) or not all(isinstance(s, slice) for s in index):
    raise ValueError(f"read({name!r}, {index!r}): give one slice per dimension of its shape "
                     f"{tuple(shape)}.")
  return index


class _LayoutReader:
  """`adapt`'s reader: a name -> plan table built once from the wrapped reader's shapes."""

  def __init__(self, reader: CheckpointReader, config: T5Config, scanned: bool):
    self.source = reader.source
    self._reader = reader
    stored = reader.shapes()
    self._plans, self._shapes, self._tables = {}, {}, {}
    if scanned:
      for stack in STACKS:  # Read and check flaxformer's per-layer tables now (small).
        per_layer = f"{stack}/{stack}/{_PER_LAYER_RELPOS}"
        if per_layer in stored:
          full = tuple(slice(None) for _ in stored[per_layer].shape)
          tree = {per_layer: reader.read(per_layer, full)}
          if f"{stack}/{_PER_LAYER_RELPOS}" in stored:
            tree[f"{stack}/{_PER_LAYER_RELPOS}"] = stored[f"{stack}/{_PER_LAYER_RELPOS}"]
          shared = _collapse_relpos(tree, self.source)[f"{stack}/{_PER_LAYER_RELPOS}"]
          self._tables[f"{stack}/{_PER_LAYER_RELPOS}"] = shared
    groups = {}
    per_layer = {f"{s}/{s}/{_PER_LAYER_RELPOS}" for s in STACKS}
    for name, sds in stored.items():
      if name in per_layer:  # Replaced by the shared table above.
        continue
      m_un, m_sc = _UNSCANNED.match(name), _scanned_match(name)
      if m_un and config.scan_layers:
        groups.setdefault((m_un[1], m_un[3]), {})[int(m_un[2])] = name
      elif m_sc and not config.scan_layers:
        n = _check_layers(m_sc[1], range(sds.shape[SCAN_AXIS]), config, self.source)
        inner = jax.ShapeDtypeStruct(sds.shape[:SCAN_AXIS] + sds.shape[SCAN_AXIS + 1:],
                                     sds.dtype)
        for i in range(n):
          self._add(f"{m_sc[1]}/layers_{i}/{m_sc[3]}", ("slice", name, i), inner)
      else:
        self._add(name, ("same", name), sds)
    for stack in {s for s, _ in groups}:
      _check_layers(stack, [i for (s, _), d in groups.items() if s == stack for i in d],
                    config, self.source)
    for (stack, path), by_layer in groups.items():
      sources = [by_layer[i] for i in sorted(by_layer)]
      name = f"{stack}/{stack}/{path}"
      self._add(name, ("stack", sources),
                _stack_leaves([stored[s] for s in sources], name, self.source))
    for name, table in self._tables.items():
      self._add(name, ("table", name), jax.ShapeDtypeStruct(table.shape, table.dtype))

  def _add(self, name, plan, sds):
    self._plans[name] = plan
    self._shapes[name] = jax.ShapeDtypeStruct(tuple(sds.shape), sds.dtype)

  def shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
    return dict(self._shapes)

  def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
    if name not in self._plans:
      raise CheckpointError(f"{self.source}: no parameter {name} (in the "
                            f"{'scanned' if 'layers_' not in name else 'unscanned'} layout "
                            f"this reader presents).")
    shape = self._shapes[name].shape
    index = _check_index(name, index, shape)
    kind, *args = self._plans[name]
    if kind == "same":
      return self._reader.read(args[0], index)
    if kind == "table":
      return np.asarray(self._tables[args[0]])[index]
    if kind == "slice":
      source, i = args
      block = self._reader.read(source, index[:SCAN_AXIS] + (slice(i, i + 1),)
                                + index[SCAN_AXIS:])
      return np.take(block, 0, axis=SCAN_AXIS)
    sources = args[0]
    layers = range(len(sources))[index[SCAN_AXIS]]
    inner = index[:SCAN_AXIS] + index[SCAN_AXIS + 1:]
    blocks = [self._reader.read(sources[i], inner) for i in layers]
    if not blocks:  # An empty layer slice: the block's shape with 0 layers.
      sizes = [len(range(n)[s]) for n, s in zip(shape, index)]
      return np.empty(sizes, self._shapes[name].dtype)
    return np.stack(blocks, axis=SCAN_AXIS)
