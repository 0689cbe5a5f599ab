"""Training: the one Accelerate loop, what a job is to it (Recipe, Update), the jobs (recipes), losses, checkpoints."""
