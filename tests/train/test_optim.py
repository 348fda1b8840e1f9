"""TRAINABLE regexes, the paper's Adafactor, losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptjax.train import losses, optim

VARIABLES = {"params": {"encoder": {"layers_0": {"mlp": {"wi_0": {"kernel": np.ones((2, 3))}}}},
                        "token_embedder": {"embedding": np.ones((5, 2))}},
             "prompt": {"prompt": np.zeros((4, 2))}}


def test_split_and_merge():
  trainable, frozen = optim.split_trainable(VARIABLES, optim.PROMPT_ONLY)
  assert trainable == {"prompt": {"prompt": VARIABLES["prompt"]["prompt"]}}
  assert "prompt" not in frozen and "params" in frozen
  merged = optim.merge(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(VARIABLES)
  t2, f2 = optim.split_trainable(VARIABLES, ["params/encoder/.*", "prompt/.*"])
  assert set(t2) == {"params", "prompt"} and "token_embedder" in f2["params"]
  assert optim.split_trainable(VARIABLES, optim.EVERYTHING)[1] == {}


def test_trainable_matching_nothing_is_an_error():
  with pytest.raises(ValueError, match=r"TRAINABLE=\['prompt'\] matches no variable; paths "
                                       r"look like params/encoder"):
    optim.split_trainable(VARIABLES, ["prompt"])  # Must match a whole path.


def test_paper_adafactor_prompt_not_factored_params_factored():
  opt = optim.paper_adafactor()
  tree = {"params": {"w": jnp.ones((256, 256))}, "prompt": {"prompt": jnp.ones((256, 256))}}
  state = opt.init(tree)
  shapes = {jax.tree_util.keystr(p): x.shape for p, x in
            jax.tree_util.tree_flatten_with_path(state)[0]}
  prompt_v = [s for k, s in shapes.items() if "'prompt'" in k and k.endswith(".v['prompt']['prompt']")]
  params_rows = [s for k, s in shapes.items() if "'params'" in k and ".v_row" in k]
  assert prompt_v == [(256, 256)]          # Full second moment: not factored.
  assert params_rows == [(256,)]           # Factored: row statistics only.
  # One step on the prompt: lr 0.3 with update clipping 1.0 and no parameter scaling.
  grads = jax.tree.map(lambda x: x * 0.01, tree)
  updates, _ = opt.update(grads, state, tree)
  u = np.asarray(updates["prompt"]["prompt"])
  # Adafactor normalises the update to RMS 1 (= the clipping threshold), times lr 0.3,
  # plus decoupled weight decay 1e-5 * param (param = 1).
  np.testing.assert_allclose(u, -(0.3 + 1e-5), rtol=1e-6)


def test_cross_entropy_with_z_loss_by_hand():
  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))  # log Z = 0
  targets = jnp.array([[0, 2]])
  loss, z = losses.cross_entropy_with_z_loss(logits, targets, jnp.array([[1, 1]]), z_loss=1e-4)
  assert float(loss) == pytest.approx(-np.log(0.5) - np.log(0.8), rel=1e-5)
  assert float(z) == pytest.approx(0.0, abs=1e-9)
  shifted = logits + 2.0  # log Z = 2: cross-entropy unchanged, z-loss 1e-4 * 4 per token.
  loss2, z2 = losses.cross_entropy_with_z_loss(shifted, targets, jnp.array([[1, 0]]))
  assert float(z2) == pytest.approx(4e-4, rel=1e-4)
  assert float(loss2) == pytest.approx(-np.log(0.5) + 4e-4, rel=1e-4)
  smooth, _ = losses.cross_entropy_with_z_loss(logits, targets, jnp.ones((1, 2)), 0.0, 0.1)
  q = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]])
  p = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
  want = np.sum(q * (np.log(q) - np.log(p)))  # KL(q || p): 0 at a perfect prediction.
  assert float(smooth) == pytest.approx(want, rel=1e-4)
