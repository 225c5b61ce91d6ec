"""chat: a chat session client and the out-of-process llama-cpp server it talks to.

Imports export (GGUF reading, family templates) and setup; never supervisor/store/cluster.
"""
