"""supervisor: the background process (queue, VRAM holds, workers, log ingestion), its command
handler, scheduler and the client every UI and CLI uses. The top wing: may import every other.
"""
