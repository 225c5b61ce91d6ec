"""The `tunegraph` command line, Qt-free: argument parsing (one module per command group), the
commands, following runs and the demos. Sits above nodes/ because it compiles graphs.
"""
