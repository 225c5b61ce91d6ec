"""Tunegraph's Qt-free core: specs, data, training worker, store, estimates, export, chat, CLI.

Importing this package is cheap: nothing here imports torch at module level except the worker side
(`engine.train`, `engine.worker`, `engine.tinymodel`), which the UI process never touches.
"""

__version__ = "0.1.0"
