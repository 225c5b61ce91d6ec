"""store: the SQLite run index (schema, ingest of both event logs, queries), live watching and run
diffs. Imports only the core.
"""
