"""Orbax checkpoints holding everything a run needs to resume exactly.

Each checkpoint step directory holds three items:

* ``state``  -- :class:`~jaxir.training.state.TrainState` (params, optimizer state, step, PRNG key),
  written asynchronously and restored directly into its sharded layout;
* ``data``   -- the grain iterator state (JSON), i.e. the data position;
* ``config`` -- the run config (JSON).

Retention keeps the last ``keep`` checkpoints plus the best one by a validation metric.
Orbax commits a step atomically (temporary directory, then rename), so a run killed
mid-save leaves the previous step intact; a step that exists but cannot be read (disk
corruption, truncated files) is reported and the previous step is used instead.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> ckpt = Checkpointer(tempfile.mkdtemp(), keep=2)
    >>> state = {"w": jnp.ones(3)}
    >>> ckpt.save(5, state, data_state={"next_index": 5}, config={"name": "demo"})
    >>> ckpt.wait()
    >>> restored = ckpt.restore_latest(state)
    >>> restored.step, restored.data_state
    (5, {'next_index': 5})
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: its ``step``, ``state`` pytree, ``data_state`` and ``config`` dicts."""

    step: int
    state: Any
    data_state: dict[str, Any]
    config: dict[str, Any]


class Checkpointer:
    """Thin policy layer over ``orbax.checkpoint.CheckpointManager``.

    Args:
      directory: where step directories go (created if missing).
      keep: how many of the latest checkpoints to keep.
      best_metric: metric name (in ``save(..., metrics=)``) whose best checkpoint is kept
        as well; ``None`` disables keep-best.
      best_mode: ``"max"`` or ``"min"``.
      async_save: write in a background thread while training continues.
    """

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        keep: int = 2,
        best_metric: str | None = None,
        best_mode: str = "max",
        async_save: bool = True,
    ):
        self.directory = pathlib.Path(directory).absolute()
        policies = [ocp.checkpoint_managers.LatestN(keep)]
        if best_metric:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(
        self,
        step: int,
        state: Any,
        *,
        data_state: dict[str, Any],
        config: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Starts saving ``state`` (async) as checkpoint ``step``."""
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
            metrics=metrics,
        )

    def steps(self) -> list[int]:
        """Steps with a committed checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    def restore(self, step: int, target: Any) -> Restored:
        """Restores checkpoint ``step`` into the structure/shardings of ``target`` (arrays or abstract)."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            target,
        )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        return Restored(step, out["state"], dict(out["data"]), dict(out["config"]))

    def restore_latest(self, target: Any) -> Restored | None:
        """The newest readable checkpoint, falling back past unreadable ones; ``None`` if there is none."""
        for step in reversed(self.steps()):
            try:
                return self.restore(step, target)
            except Exception as e:
                log.warning(
                    "Checkpoint step %d in %s cannot be restored (%s: %s); falling back to the "
                    "previous checkpoint. Delete %s/%d to silence this.",
                    step,
                    self.directory,
                    type(e).__name__,
                    str(e).splitlines()[0][:200],
                    self.directory,
                    step,
                )
        return None

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
