"""Training: mesh and sharding rules, train state, steps, checkpoints, metrics and the loop."""
