"""The jitted, sharded train and eval steps.

One `jax.jit` per step with explicit in/out shardings; the train state is donated;
gradients are taken with respect to `state.trainable` only, so the frozen weights get
no weight gradients (XLA never builds them) and stay out of the optimizer.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ptjax.train import losses, partitioning
from ptjax.train.optim import merge
from ptjax.train.state import TrainState

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Paper defaults: summed cross-entropy, z-loss 1e-4, no label smoothing."""
  z_loss: float = 1e-4
  label_smoothing: float = 0.0


def _loss(model, loss_config, trainable, frozen, batch, dropout_rng):
  variables = merge(trainable, frozen)
  enable_dropout = dropout_rng is not None
  logits = model.apply(variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                       batch["decoder_target_tokens"], enable_dropout=enable_dropout,
                       rngs={"dropout": dropout_rng} if enable_dropout else None)
  weights = batch.get("decoder_loss_weights", batch["decoder_target_tokens"] > 0)
  loss, z_loss = losses.cross_entropy_with_z_loss(
      logits, batch["decoder_target_tokens"], weights, loss_config.z_loss,
      loss_config.label_smoothing)
  return loss, {"loss": loss, "z_loss": z_loss, "tokens": jnp.sum(weights)}


@dataclasses.dataclass
class Steps:
  """Compiled steps: train(state, frozen, batch) -> (state, metrics); eval(state, frozen,
  batch) -> metrics. Metrics are replicated scalars (sums over the global batch)."""
  train: Callable[[TrainState, Any, Batch], tuple[TrainState, dict]]
  eval: Callable[[TrainState, Any, Batch], dict]


def build_steps(model, optimizer: optax.GradientTransformation, mesh: Mesh,
                state_shardings: TrainState, frozen_shardings: Any,
                loss_config: LossConfig = LossConfig(), dropout: bool = True) -> Steps:
  """Jits the steps for `mesh`; shardings come from `trainer.init_state`."""
  batch_sharding = partitioning.batch_sharding(mesh)
  scalar = partitioning.replicated(mesh)

  def train_step(state: TrainState, frozen: Any, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.step) if dropout else None
    grads, metrics = jax.grad(
        lambda t: _loss(model, loss_config, t, frozen, batch, rng), has_aux=True)(state.trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    new = state.replace(step=state.step + 1, trainable=optax.apply_updates(state.trainable, updates),
                        opt_state=opt_state)
    return new, metrics

  def eval_step(state: TrainState, frozen: Any, batch: Batch):
    return _loss(model, loss_config, state.trainable, frozen, batch, None)[1]

  def with_rules(fn):
    # Traced under the mesh and the logical rules, so the model's activation constraints
    # (`constrain`) become real sharding constraints.
    def wrapped(*args):
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), partitioning.axis_rules():
        return fn(*args)
    return wrapped

  train = jax.jit(with_rules(train_step),
                  in_shardings=(state_shardings, frozen_shardings, batch_sharding),
                  out_shardings=(state_shardings, scalar), donate_argnums=(0,))
  evaluate = jax.jit(with_rules(eval_step),
                     in_shardings=(state_shardings, frozen_shardings, batch_sharding),
                     out_shardings=scalar)
  return Steps(train=train, eval=evaluate)
