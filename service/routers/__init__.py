"""One router per resource: jobs, artifacts, checkpoints, predict, catalogue, health."""
