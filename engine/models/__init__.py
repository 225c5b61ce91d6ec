"""models: where a base model comes from (hub id, folder, gguf:, builtin:) and how it is loaded.

Imports the core and data (chat templates for the tiny model and GGUF tokenizers).
"""
