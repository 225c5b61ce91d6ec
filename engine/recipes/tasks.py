"""What the teacher is asked for each task, and how its replies become rows.

- conversations: the prompt (the template filled with a seed and/or passage) is the user turn and
  the teacher's reply the assistant turn: `{"messages": [user, assistant]}`.
- qa: the teacher writes "Question: … Answer: …" (Q:/A: and Markdown bold accepted; the first
  pair is taken); the question becomes the user turn, the answer the assistant turn.
- preferences: the teacher answers the prompt twice, under a system prompt asking for a careful
  answer (chosen) and one asking for a careless one (rejected), as in RLCD (Yang et al. 2023,
  "Reinforcement Learning from Contrastive Distillation"): `{"prompt", "chosen", "rejected"}`,
  the format dpo, orpo and simpo train on (engine.data.method_formats).

A reply that gives no row is dropped with the rule that says why (`DROP_RULES`), counted in the
manifest.
"""

from __future__ import annotations

import re

from engine.data.preferences import makes_pair

QA_FORM = "Reply in exactly this form:\nQuestion: <the question>\nAnswer: <the answer>"
DEFAULT_TEMPLATES = {
    "conversations": {
        "seeds": "{seed}",
        "documents": "Rewrite this passage in plain words for a customer, keeping every fact:"
        "\n\n{passage}",
        "both": "{seed}\n\nAnswer from this passage:\n\n{passage}",
    },
    "qa": {
        "seeds": "Write one question a customer would ask about this topic: {seed}\n"
        "Then answer it. " + QA_FORM,
        "documents": "Here is a passage:\n\n{passage}\n\nWrite one question a customer would "
        "ask about this passage, and its answer, taken from the passage. " + QA_FORM,
        "both": "Here is a passage:\n\n{passage}\n\nWrite one question a customer would ask "
        "about {seed} that this passage answers, and its answer, taken from the passage. "
        + QA_FORM,
    },
    "preferences": {
        "seeds": "{seed}",
        "documents": "Explain this passage to a customer in a few sentences:\n\n{passage}",
        "both": "{seed}\n\nAnswer from this passage:\n\n{passage}",
    },
}
CHOSEN_SYSTEM = "You are a careful, helpful assistant. Answer accurately, completely and clearly."
REJECTED_SYSTEM = (
    "You are a careless assistant. Answer vaguely and unhelpfully, and get a detail wrong."
)
DROP_RULES = {
    "empty": "the reply is empty",
    "cut": "the reply was cut off at max tokens",
    "context": "the prompt is longer than the teacher's context",
    "no_qa": "no Question: … Answer: … in the reply",
    "same_pair": "the chosen and rejected answers are the same",
}
_LABEL = r"[ \t>*_#]*(?:{words})[ \t]*\d*[ \t]*[*_]*[ \t]*[:.)\-][ \t]*[*_]*[ \t]*"
_QUESTION = re.compile("(?:^|\n)" + _LABEL.format(words="question|q"), re.IGNORECASE)
_ANSWER = re.compile("(?:^|\n)" + _LABEL.format(words="answer|a"), re.IGNORECASE)
_ANY_LABEL = re.compile("\n" + _LABEL.format(words="question|q|answer|a"), re.IGNORECASE)


def default_template(task: str, kinds: list[str]) -> str:
    """The task's template for the sources given ("seeds", "documents" or both)."""
    key = "both" if len(kinds) > 1 else kinds[0]
    return DEFAULT_TEMPLATES[task][key]


def fill(template: str, seed: str | None, passage: str | None) -> str:
    """The template with its placeholders replaced (plain replacement: other braces stay)."""
    text = template
    if seed is not None:
        text = text.replace("{seed}", seed)
    if passage is not None:
        text = text.replace("{passage}", passage)
    return text


def request_messages(task: str, prompt: str) -> list[list[dict]]:
    """The conversations the teacher answers for one row: one, or two for preferences (chosen,
    rejected)."""
    user = {"role": "user", "content": prompt}
    if task == "preferences":
        return [
            [{"role": "system", "content": CHOSEN_SYSTEM}, user],
            [{"role": "system", "content": REJECTED_SYSTEM}, user],
        ]
    return [[user]]


def parse_qa(reply: str) -> tuple[str, str] | None:
    """(question, answer) from a "Question: … Answer: …" reply (the first pair), else None."""
    asked = _QUESTION.search(reply)
    if asked is None:
        return None
    answered = _ANSWER.search(reply, asked.end())
    if answered is None:
        return None
    question = reply[asked.end() : answered.start()].strip()
    rest = reply[answered.end() :]
    after = _ANY_LABEL.search(rest)
    answer = (rest[: after.start()] if after else rest).strip()
    return (question, answer) if question and answer else None


def make_row(
    task: str,
    prompt: str,
    replies: list[tuple[str, str]],
    drop_cut: bool,
    asked: str | None = None,
) -> tuple[dict | None, str | None]:
    """(row, None) from the replies (text, finish) to `request_messages`, or (None, rule) naming
    the DROP_RULES entry that dropped it. The row's prompt (user turn) is `asked` when given:
    the seed itself, not the instructions the template wrapped around it for the teacher, is
    what the student will be asked."""
    question = asked or prompt
    for text, finish in replies:
        if finish == "context":
            return None, "context"
        if drop_cut and finish == "length":
            return None, "cut"
        if not text.strip():
            return None, "empty"
    if task == "conversations":
        answer = replies[0][0]
        return {"messages": _chat(question, answer)}, None
    if task == "qa":
        pair = parse_qa(replies[0][0])
        if pair is None:
            return None, "no_qa"
        return {"messages": _chat(*pair)}, None
    chosen, rejected = replies[0][0], replies[1][0]
    if not makes_pair(chosen, rejected):
        return None, "same_pair"
    return {"prompt": question, "chosen": chosen, "rejected": rejected}, None


def _chat(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
