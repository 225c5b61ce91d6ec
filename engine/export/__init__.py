"""export: adapter ZIP, merge, GGUF conversion and quantization, parity check, Modelfile/Ollama,
model card, artifact records. Imports plan, models, data, setup; never supervisor/store/cluster.
"""
