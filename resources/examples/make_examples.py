"""Write the example graphs in this folder with nodes.GraphBuilder.

Run from the repository root: `.venv/bin/python resources/examples/make_examples.py`. Node ids and
uuids come from a fixed seed, so running it again rewrites identical files.
"""

from __future__ import annotations

from pathlib import Path

from nodes.graphfile import GraphBuilder, save_graph

HERE = Path(__file__).resolve().parent

# Small enough that each module finishes on 2 CPU cores in about a minute.
QUICK_TRAINING = {"epochs": 1.0, "micro_batch_size": 8, "max_seq_length": 256, "eval_split": 0.05,
                  "save_steps": 20, "packing": True}


def build_sweep() -> dict:
    """Two Fine-Tune modules on the tiny model that differ only in learning rate.

    They share one Dataset and one LoRA config node; the second module is a duplicate of the
    first (its origin_uuid), with its own Training config node.
    """
    g = GraphBuilder(seed=20261122)
    model = g.add_node("BaseModel", "tiny llama", (0, 0), source="builtin:tiny-llama")
    data = g.add_node("Dataset", "support chats", (0, 130),
                      path="../datasets/support_chats.jsonl")
    lora = g.add_node("LoraConfig", "LoRA r8", (0, 260), r=8, alpha=16,
                      target_modules=["q_proj", "v_proj"])
    train_a = g.add_node("TrainingConfig", "train lr 1e-3", (0, 390), learning_rate=1e-3,
                         **QUICK_TRAINING)
    train_b = g.add_node("TrainingConfig", "train lr 5e-3", (0, 520), learning_rate=5e-3,
                         **QUICK_TRAINING)
    first = g.add_node("FineTune", "support lr 1e-3", (420, 150))
    second = g.add_node("FineTune", "support lr 5e-3", (420, 400), origin_uuid=g.uuid_of(first))
    for module, training in ((first, train_a), (second, train_b)):
        g.connect(model, module, "base_model")
        g.connect(data, module, "dataset")
        g.connect(training, module, "training_config")
        g.connect(lora, module, "lora_config")
    return g.to_dict()


def build_chain() -> dict:
    """SFT on the support chats, then DPO on preference pairs, starting from the SFT run.

    The DPO module's base model input is the SFT module's model output: it waits for the SFT run,
    then trains from that run's adapter merged into the tiny model.
    """
    g = GraphBuilder(seed=20261205)
    model = g.add_node("BaseModel", "tiny llama", (0, 0), source="builtin:tiny-llama")
    chats = g.add_node("Dataset", "support chats", (0, 130),
                       path="../datasets/support_chats.jsonl")
    prefs = g.add_node("Dataset", "support preferences", (420, 330),
                       path="../datasets/support_prefs.jsonl")
    lora = g.add_node("LoraConfig", "LoRA r8", (0, 260), r=8, alpha=16,
                      target_modules=["q_proj", "v_proj"])
    sft_training = g.add_node("TrainingConfig", "train sft", (0, 390), learning_rate=1e-3,
                              **QUICK_TRAINING)
    dpo_training = g.add_node("TrainingConfig", "train dpo", (420, 460), learning_rate=5e-4,
                              **{**QUICK_TRAINING, "packing": False})
    sft = g.add_node("FineTune", "support sft", (420, 100))
    dpo = g.add_node("FineTune", "support dpo", (840, 250), method="dpo", beta=0.1)
    g.connect(model, sft, "base_model")
    g.connect(chats, sft, "dataset")
    g.connect(sft_training, sft, "training_config")
    g.connect(lora, sft, "lora_config")
    g.connect(sft, dpo, "base_model", "model")
    g.connect(prefs, dpo, "dataset")
    g.connect(dpo_training, dpo, "training_config")
    g.connect(lora, dpo, "lora_config")
    return g.to_dict()


EXAMPLES = {"sweep.json": build_sweep, "sft-then-dpo.json": build_chain}


def main() -> None:
    """Write every example graph next to this script."""
    for name, build in EXAMPLES.items():
        save_graph(build(), HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
