"""data: read a dataset file, detect its format, apply the chat template, encode, mask and pack.

Imports only the core (errors, spec, paths); the tokenizer comes in as an argument.
"""
