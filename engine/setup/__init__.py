"""setup: the engine environment (interpreters, GPU flavours, offline bundle, converter tools) and
streaming child processes. Imports only the core.
"""
