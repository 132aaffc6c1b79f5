"""Training: abstract sharded state, one task-agnostic jitted step, Orbax checkpoints, the loop.

The entry point is the plain function :func:`jaxir.training.loop.train`, also exported as
``jaxir.train(config, workdir)``.
"""
