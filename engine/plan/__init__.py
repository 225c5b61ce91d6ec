"""plan: what a run will cost before it starts: model shape, VRAM (and its traced check), time,
the data preview, and the report helpers the UI and supervisor run. Imports data, models, setup.
"""
