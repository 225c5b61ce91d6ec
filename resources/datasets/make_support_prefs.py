"""Generate support_prefs.jsonl: preference pairs for DPO after SFT on support_chats.jsonl.

Each pair takes one chat of support_chats.jsonl: the prompt is its system and user turns (TRL's
conversational form), `chosen` is the house-style answer (greeting by name, the fix, the sign-off)
and `rejected` is a curt answer that drops them, chosen with a fixed seed, so the file is
byte-for-byte reproducible:

    python resources/datasets/make_support_prefs.py            # writes support_prefs.jsonl beside it

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURT = [
    "{core}",
    "Not sure. {core}",
    "{core} That's all I can say.",
    "Read the FAQ. {core}",
    "ok. {core}",
]


def curt(answer: str, rng: random.Random) -> str:
    """The answer without its greeting and sign-off, in a curt frame."""
    core = re.sub(r"^Hi [^!]+! ", "", answer)
    core = core.removesuffix(" Anything else?").strip()
    sentences = re.split(r"(?<=[.!?]) ", core)
    core = " ".join(sentences[: max(1, len(sentences) // 2)])
    return rng.choice(CURT).format(core=core)


def pairs(chats: Path, seed: int = 20261205) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for line in chats.read_text(encoding="utf-8").splitlines():
        turns = json.loads(line)["messages"]
        answer = turns[-1]["content"]
        out.append(
            {
                "prompt": turns[:-1],
                "chosen": [{"role": "assistant", "content": answer}],
                "rejected": [{"role": "assistant", "content": curt(answer, rng)}],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=Path, default=HERE / "support_chats.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "support_prefs.jsonl")
    args = parser.parse_args()
    rows = pairs(args.chats)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} pairs to {args.out}")


if __name__ == "__main__":
    main()
