"""Tunegraph's Qt-free core, organised in wings by pipeline stage.

At the top only the contracts every wing shares: errors, spec and fields (a knob's declaration and
its checks), events, control, paths, settings, secrets, hardware, rundir (run-directory names and
the process entry points) and formatting (values as people read them, for the windows and the
command line alike). The wings, lowest first: setup (engine environment, child processes), data
(formats, chat templates, encoding), models (base-model sources, tiny model, GGUF bases), plan
(shape, VRAM, time, preview), export (adapter ZIP, GGUF, Ollama), training (worker, Trainer set-up,
callback, checkpoints, launching) and chat, then store (SQLite index) and cluster (Ray), and the
supervisor on top. A wing imports only the core and wings below it (import-linter contracts in
pyproject.toml). Nothing here imports Qt, nodes/ or app/; torch is imported only in worker and
helper processes, never at package import.
"""

__version__ = "0.1.0"
