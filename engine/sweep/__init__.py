"""Sweeps: a Sweep node's search as an Optuna study (study), and what a study holds for the
command line and the app (report). The supervisor drives studies (engine.supervisor.sweeps).

This wing sits below the supervisor: it may import the store, the core (spec, sweep_spec, paths)
and Optuna, and nothing else of the engine (no torch: the supervisor and the app read it).
"""
