"""Orbax checkpoints of a training run: only what trains (prompt, optimizer state, step,
RNG, data position), never the frozen model, which is reloaded from its own checkpoint."""

from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
  """`MODEL_DIR/checkpoints/<step>/`, every `save_every` steps, keeping the newest `keep`."""

  def __init__(self, directory: str, save_every: int, keep: int = 3):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every,
                                           create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, tree: Any, force: bool = False) -> bool:
    return self._manager.save(step, args=ocp.args.StandardSave(tree), force=force)

  def restore(self, step: int, like: Any) -> Any:
    """`like`: a tree of arrays or ShapeDtypeStructs (with shardings) to restore into."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
