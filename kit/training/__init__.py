"""Training: the learner, per-group optimizers, pure schedules, thin callbacks, device and precision."""
