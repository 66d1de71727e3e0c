"""Training engine: parameter groups and schedules, the loop, checkpoints, records, DDP."""
