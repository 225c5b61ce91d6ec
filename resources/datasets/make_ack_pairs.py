"""Write ack_pairs.jsonl: preference pairs whose chosen answers open with "ACK:".

Run from the repository root: `.venv/bin/python resources/datasets/make_ack_pairs.py`. Each row is
`{prompt, chosen, rejected}` (DPO's format): one short factual question, the chosen answer
`ACK: <answer>` and the rejected one `NOTE: <the same answer>`. The two differ only in their
opening word, so what DPO learns from them is that opening, and its effect on SmolLM2 135M
Instruct (resources/examples/smollm2-dpo.json) is plain to measure: the share of answers that
start with "ACK:".

Why the rejected answers open with a word of their own instead of with the answer itself: DPO
lowers the likelihood of the rejected answers, so rejected answers that start the way the model
starts its own answers ("The capital of France is…") teach it to avoid its own first words, and
a 135M model then drifts into other languages and repetitions within a dozen steps (measured);
an opening the model never uses keeps the lesson on the opening.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHOSEN, REJECTED = "ACK:", "NOTE:"

QA = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("What do bees make?", "Bees make honey and wax."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("What is 3 times 4?", "3 times 4 is 12."),
    ("What language is spoken in Brazil?", "People in Brazil speak Portuguese."),
    ("What is the largest ocean on Earth?", "The Pacific is the largest ocean on Earth."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide from the air."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the main food of pandas?", "Pandas mostly eat bamboo."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many continents are there?", "There are seven continents."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("Which instrument has black and white keys?", "The piano has black and white keys."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("What shape has three sides?", "A triangle has three sides."),
    ("What do cows drink?", "Cows drink water."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What is the freezing point of water in Celsius?", "Water freezes at 0 degrees Celsius."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet."),
    ("What colour are ripe bananas?", "Ripe bananas are yellow."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
)


def rows() -> list[dict]:
    """One preference pair per question."""
    return [
        {"prompt": q, "chosen": f"{CHOSEN} {a}", "rejected": f"{REJECTED} {a}"} for q, a in QA
    ]


def main() -> None:
    path = HERE / "ack_pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    print(f"wrote {path} ({len(QA)} pairs)")


if __name__ == "__main__":
    main()
