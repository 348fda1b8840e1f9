"""The pre-trained mini T5 shipped in ptjax/assets (scripts/pretrain_mini.sh large): the
exact T5 1.1 mini_large tree, and greedy continuations that know the mini world, which
only pre-training on its corpus can teach (a random model of the same shape knows none)."""

import functools
import os

import jax
import numpy as np
import pytest

from ptjax import assets
from ptjax.checkpoints import load_checkpoint
from ptjax.data import mini_tasks, mini_world
from ptjax.model import T5, count_params, inference, init_params, param_shapes, preset

CONFIG = preset("mini_large", dropout_rate=0.0)


@pytest.fixture(scope="module")
def params():
  return load_checkpoint(assets.MINI_T5_CHECKPOINT, CONFIG)[1]


def continue_text(params, prefixes: list[str], length: int = 6) -> list[str]:
  """Greedy continuations, LM adaptation's format: the prefix (+ EOS) in, the rest out."""
  vocab = mini_tasks.mini_vocabulary()
  rows = [list(vocab.encode(p)) + [1] for p in prefixes]
  tokens = np.zeros((len(rows), max(map(len, rows))), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
  generate = jax.jit(functools.partial(inference.generate, T5(CONFIG),
                                       max_decode_length=length))
  decoded, _ = generate(params, tokens)
  return [vocab.decode([int(t) for t in row if t > 1]) for row in np.asarray(decoded)]


def world_knowledge(params) -> dict[str, float]:
  """Share of correct greedy continuations per kind of fact the corpus states."""
  world = mini_world.default_world()
  people = world.people[:120]
  probes = {
      "product": [(f"NEWS: {f.name}, the maker of", f.product) for f in world.firms],
      "river": [(f"{t.name} is a town in {t.region} on the", f"{t.river} river")
                for t in world.towns],
      "home": [(f"{p.name} was born in {p.born} and lives in", p.town) for p in people],
      "yes_no": [(f"A: Does {p.name} live in {t}? B:", "yes" if t == p.town else "no")
                 for i, p in enumerate(people)
                 for t in [p.town if i % 2 else world.towns[i % 24].name]],
  }
  return {kind: float(np.mean([out.startswith(answer) for (_, answer), out in
                               zip(pairs, continue_text(params, [q for q, _ in pairs]))]))
          for kind, pairs in probes.items()}


def test_shipped_checkpoint_is_t5_1_1_mini_large_within_15_mb(params):
  expected = jax.tree.map(lambda s: (s.shape, s.dtype), param_shapes(CONFIG))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == expected
  assert sum(np.size(x) for x in jax.tree.leaves(params)) == count_params(CONFIG) == 2_067_456
  size = sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(assets.ROOT) for f in files)
  assert size <= 15 * 2**20


def test_greedy_continuations_know_the_mini_world(params):
  knows = world_knowledge(params)
  # Measured on the shipped model: products 0.275 (11 of 40 firms), rivers 0.667 (16 of 24
  # towns), homes 0.042, yes/no 0.48 (chance). A fixed guess among the 8 products or 6
  # rivers is right at most a few times; a random model never names one.
  assert knows["product"] >= 0.2 and knows["river"] >= 0.5, knows
  random = jax.tree.map(np.asarray, init_params(CONFIG, jax.random.PRNGKey(0)))
  unknowing = world_knowledge(random)
  assert unknowing["product"] == unknowing["river"] == unknowing["home"] == 0.0, unknowing
