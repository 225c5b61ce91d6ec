"""training: the worker process, the Trainer set-up for a spec, its callback, checkpoints, and
launching workers (executors). Imports plan, models, data, export; never supervisor/store/cluster.
"""
