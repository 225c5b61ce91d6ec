"""Write owl_style.jsonl: short questions answered in one unmistakable voice.

Run from the repository root: `.venv/bin/python resources/datasets/make_owl_style.py`. Every answer
is one plain sentence between a fixed opening and sign-off, `Owl says: The capital of France is
Paris. Hoot hoot!`, so the effect of fine-tuning an instruction model on it is plain to see and to
test: the base answers in its own words, the tuned one in the owl's, and stops right after
"Hoot hoot!". The facts are those of make_json_style.py (same tables); a fixed seed rewrites the
same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from make_json_style import CAPITALS, COLOURS, OPPOSITES, SOUNDS  # the folder of this script

HERE = Path(__file__).resolve().parent
SEED = 20261205
OPENING, SIGN_OFF = "Owl says:", "Hoot hoot!"


def answer(sentence: str) -> str:
    """The one answer shape the model must learn."""
    return f"{OPENING} {sentence} {SIGN_OFF}"


def rows(rng: random.Random) -> list[dict]:
    """Question/answer chats over capitals, colours, opposites, animal sounds and arithmetic."""
    out = []
    for country, city in CAPITALS.items():
        q = rng.choice(
            ["What is the capital of {}?", "Which city is the capital of {}?", "Name the capital of {}."]
        ).format(country)
        out.append((q, answer(f"The capital of {country} is {city}.")))
    for thing, colour in COLOURS.items():
        out.append((f"What colour is {thing}?", answer(f"{thing[0].upper()}{thing[1:]} is {colour}.")))
    for word, opposite in OPPOSITES.items():
        out.append((f"What is the opposite of '{word}'?", answer(f"The opposite of {word} is {opposite}.")))
    for animal, sound in SOUNDS.items():
        out.append((f"What sound does a {animal} make?", answer(f"A {animal} says {sound}.")))
    for _ in range(60):
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if rng.random() < 0.5:
            out.append((f"What is {a} plus {b}?", answer(f"{a} plus {b} is {a + b}.")))
        else:
            m = b % 10 + 2
            out.append((f"What is {a} times {m}?", answer(f"{a} times {m} is {a * m}.")))
    rng.shuffle(out)
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in out
    ]


def main() -> None:
    path = HERE / "owl_style.jsonl"
    data = rows(random.Random(SEED))
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    print(f"wrote {len(data)} rows to {path}")


if __name__ == "__main__":
    main()
