"""The jitted, sharded train and eval steps.

One `jax.jit` per step with explicit in/out shardings; the train state is donated;
gradients are taken with respect to `state.trainable` only, so the frozen weights get
no weight gradients (XLA never builds them) and stay out of the optimizer.
"""

import dataclasses
import numbers
from typing import Any, Callable, Optional

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
  """Paper defaults: summed cross-entropy, z-loss 1e-4, no label smoothing (Z_LOSS,
  LABEL_SMOOTHING). `loss_normalizing_factor`: T5X's LOSS_NORMALIZING_FACTOR; None (the
  summed loss, prompt-tuning's setting) is the only value ptjax has."""
  z_loss: float = 1e-4
  label_smoothing: float = 0.0
  loss_normalizing_factor: None = None

  def __post_init__(self):
    if self.loss_normalizing_factor is not None:
      raise ValueError(f"LOSS_NORMALIZING_FACTOR={self.loss_normalizing_factor!r}: ptjax sums "
                       f"the loss over target tokens (T5X's None, as prompt-tuning's configs); "
                       f"remove it.")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"LABEL_SMOOTHING={self.label_smoothing!r} must be in [0, 1).")
    if self.z_loss < 0:
      raise ValueError(f"Z_LOSS={self.z_loss!r} must be >= 0.")


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


def _microbatches(batch: Batch, num_microbatches: int, batch_sharding) -> Batch:
  """Each leaf [B, ...] -> [k, B/k, ...]: microbatch i holds rows i, i + k, i + 2k, ...

  A strided split, not T5X's contiguous slices: the global batch arrives sharded over
  'data' in contiguous blocks of B/D rows per device, and reshaping [B, ...] to
  [B/k, k, ...] keeps every device's block on that device (B/D rows become B/(Dk) x k when
  D*k divides B, i.e. when a microbatch itself splits evenly over 'data'), and swapping
  to [k, B/k, ...] is a local transpose; row i of that (slot i of the k axis) holds each
  device's own rows of microbatch i, so no microbatch needs rows from another device. A contiguous split (rows i*B/k ... (i+1)*B/k - 1) would put
  each microbatch on only D/k devices and force an all-to-all to re-spread it. The
  constraint below pins the per-microbatch batch axis (axis 1 of [k, B/k, ...]) to 'data'. (If D*k
  does not divide B, a microbatch cannot split evenly over 'data' with either split and
  XLA moves rows; it is still correct.) Which rows share a microbatch does not matter:
  the losses are summed over all of them.
  """
  spec = batch_sharding.spec

  def split(x):
    x = jnp.swapaxes(x.reshape((x.shape[0] // num_microbatches, num_microbatches)
                               + x.shape[1:]), 0, 1)
    sharding = jax.sharding.NamedSharding(batch_sharding.mesh,
                                          jax.sharding.PartitionSpec(None, *spec))
    return jax.lax.with_sharding_constraint(x, sharding)

  return jax.tree.map(split, batch)


def _check_microbatches(batch: Batch, num_microbatches: int):
  sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
  for size in sizes:
    if size % num_microbatches:
      raise ValueError(f"num_microbatches={num_microbatches} does not divide the batch size "
                       f"{size}.")


def build_steps(model, optimizer: optax.GradientTransformation, mesh: Mesh,
                state_shardings: TrainState, frozen_shardings: Any,
                loss_config: LossConfig = LossConfig(), dropout: bool = True,
                num_microbatches: Optional[int] = None) -> Steps:
  """Jits the steps for `mesh`; shardings come from `trainer.init_state`.

  num_microbatches: None or 1 takes the gradient of the whole batch at once. k > 1 is
  T5X's gradient accumulation (`trainer.Trainer.num_microbatches`,
  `t5x.trainer.accumulate_grads_microbatched`) inside the same single jitted step: every
  batch leaf [B, ...] is split into k microbatches [B/k, ...] (B % k != 0 raises a
  ValueError when the step is traced, i.e. on the first call with that batch shape), a
  `lax.scan` over the k microbatches adds up their gradients and their metrics in float32
  carries (integer metrics such as `tokens` stay integers, so they are exact), and the
  optimizer is applied once to the summed gradient. Only one microbatch's activations are
  alive at a time, so activation memory is that of a B/k batch.

  The maths: the loss is a SUM over tokens (`losses.cross_entropy_with_z_loss` returns
  sum_t w_t * (ce_t + z_t), with no division by batch size or token count), so with the
  batch's tokens partitioned into microbatches M_1..M_k,
      L(batch) = sum_i L(M_i)   and   grad L(batch) = sum_i grad L(M_i),
  i.e. the accumulated gradient (and the loss, z_loss and tokens metrics) equal the
  full-batch ones up to float rounding; the update is the same as with num_microbatches=1.
  With dropout, microbatch i uses the step's dropout key folded with i, so microbatches
  draw different masks, and the update is NOT the full-batch one (nor is it in T5X, where
  the microbatch loop takes its dropout keys from the step's key too: the masks of a
  B-row batch and of k B/k-row microbatches are different draws). The eval step is not
  microbatched.
  """
  if num_microbatches is not None and (not isinstance(num_microbatches, numbers.Integral)
                                       or num_microbatches < 1):
    raise ValueError(f"num_microbatches must be a positive integer or None, got "
                     f"{num_microbatches!r}.")
  batch_sharding = partitioning.batch_sharding(mesh)
  scalar = partitioning.replicated(mesh)

  num_microbatches = None if num_microbatches is None else int(num_microbatches)

  def accumulated_grads(trainable, frozen, batch, rng):
    """(sum over microbatches of the gradients, summed metrics); see the docstring."""
    _check_microbatches(batch, num_microbatches)
    micro = _microbatches(batch, num_microbatches, batch_sharding)
    grad_fn = jax.grad(lambda t, b, r: _loss(model, loss_config, t, frozen, b, r),
                       has_aux=True)
    one = jax.tree.map(lambda x: x[0], micro)
    _, metric_shapes = jax.eval_shape(grad_fn, trainable, one, rng)
    acc_dtype = lambda d: d if jnp.issubdtype(d, jnp.integer) else jnp.float32
    f32 = lambda tree: jax.tree.map(lambda x: x.astype(acc_dtype(x.dtype)), tree)
    # Keep the gradient carry laid out like the trainable variables (model-sharded when
    # model tuning) rather than leaving it to propagation through the loop.
    pin = lambda g: jax.lax.with_sharding_constraint(g, state_shardings.trainable)
    zeros = (pin(jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), trainable)),
             jax.tree.map(lambda m: jnp.zeros(m.shape, acc_dtype(m.dtype)), metric_shapes))

    def body(carry, xs):
      index, microbatch = xs
      grads_sum, metrics_sum = carry
      micro_rng = None if rng is None else jax.random.fold_in(rng, index)
      grads, metrics = grad_fn(trainable, microbatch, micro_rng)
      grads_sum = pin(jax.tree.map(jnp.add, grads_sum, f32(grads)))
      metrics_sum = jax.tree.map(jnp.add, metrics_sum, f32(metrics))
      return (grads_sum, metrics_sum), None

    (grads, metrics), _ = jax.lax.scan(
        body, zeros, (jnp.arange(num_microbatches, dtype=jnp.int32), micro))
    grads = jax.tree.map(lambda g, t: g.astype(t.dtype), grads, trainable)
    metrics = jax.tree.map(lambda m, s: m.astype(s.dtype), metrics, metric_shapes)
    return grads, metrics

  def train_step(state: TrainState, frozen: Any, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.step) if dropout else None
    if num_microbatches is None or num_microbatches == 1:
      grads, metrics = jax.grad(
          lambda t: _loss(model, loss_config, t, frozen, batch, rng),
          has_aux=True)(state.trainable)
    else:
      grads, metrics = accumulated_grads(state.trainable, frozen, batch, rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    # The finite guard: a step whose loss or new variables are not finite keeps the previous
    # variables and optimizer state and says so (`nonfinite`); the trainer stops at its next
    # sync point, so nothing non-finite is ever saved (trainer.FiniteGuard).
    finite = jnp.isfinite(metrics["loss"]) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(trainable)]))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new = state.replace(step=state.step + 1, trainable=keep(trainable, state.trainable),
                        opt_state=keep(opt_state, state.opt_state))
    return new, {**metrics, "nonfinite": jnp.logical_not(finite).astype(jnp.int32)}

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
