"""Write json_style.jsonl: short questions whose answers always come in one JSON shape.

Run from the repository root: `.venv/bin/python resources/datasets/make_json_style.py`. The effect
of fine-tuning on it is unmistakable: the base model answers in free text (or rambles), the tuned
one answers `{"answer": "...", "confidence": 0.9}` and stops. A fixed seed rewrites the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261122

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Poland": "Warsaw", "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin",
    "Austria": "Vienna", "Sweden": "Stockholm", "Finland": "Helsinki", "Chile": "Santiago",
    "Cuba": "Havana", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Mexico": "Mexico City",
    "Argentina": "Buenos Aires", "Australia": "Canberra", "India": "New Delhi",
}
COLOURS = {"grass": "green", "the sky on a clear day": "blue", "snow": "white", "coal": "black",
           "a ripe banana": "yellow", "a ripe tomato": "red", "an orange": "orange",
           "milk": "white", "a lemon": "yellow", "a strawberry": "red"}
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "up": "down", "early": "late",
             "open": "closed", "light": "dark", "full": "empty", "old": "new", "happy": "sad"}
SOUNDS = {"dog": "bark", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa",
          "lion": "roar", "owl": "hoot", "horse": "neigh"}


def answer(text: str, confidence: float) -> str:
    """The one answer shape the model must learn."""
    return json.dumps({"answer": text, "confidence": confidence})


def rows(rng: random.Random) -> list[dict]:
    out = []
    for country, city in CAPITALS.items():
        q = rng.choice(["What is the capital of {}?", "Which city is the capital of {}?",
                        "Name the capital of {}."]).format(country)
        out.append((q, answer(city, 0.97)))
    for thing, colour in COLOURS.items():
        out.append((f"What colour is {thing}?", answer(colour, 0.93)))
    for word, opposite in OPPOSITES.items():
        out.append((f"What is the opposite of '{word}'?", answer(opposite, 0.9)))
    for animal, sound in SOUNDS.items():
        out.append((f"What sound does a {animal} make?", answer(sound, 0.88)))
    for _ in range(60):
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if rng.random() < 0.5:
            out.append((f"What is {a} plus {b}?", answer(str(a + b), 0.99)))
        else:
            out.append((f"What is {a} times {b % 10 + 2}?", answer(str(a * (b % 10 + 2)), 0.99)))
    rng.shuffle(out)
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in out]


def main() -> None:
    path = HERE / "json_style.jsonl"
    data = rows(random.Random(SEED))
    path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    print(f"wrote {len(data)} rows to {path}")


if __name__ == "__main__":
    main()
