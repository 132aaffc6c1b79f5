"""Training: abstract state init, one jitted step, Orbax checkpoints, the loop."""
