"""eval: score models on an eval set and rank them.

Eval sets (any format the Dataset node reads; a row's last assistant turn is the reference), the
scorers (`score(output, reference, row) -> float`, the one interface eval metrics and GRPO
rewards share), the local GGUF judge, targets (a run's adapter on its base, a base model, a GGUF
file, or a model already in memory), the runner (`evaluate`), the scoreboard, a run's results
row by row (`run_results`), an eval's memory estimate and the eval worker process (`python -m
engine.eval.worker EVAL_DIR`). Imports chat, export, plan, models, data, setup and the core; never
training, supervisor, store or cluster (training calls it at the end of a run for the run's Eval
nodes; the supervisor places its worker).
"""
