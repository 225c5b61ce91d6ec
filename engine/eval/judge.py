"""The local judge: a GGUF model grades outputs against references (llama.cpp, engine.chat).

`judge`: the judge reads a fixed rubric with the question, the reference and the answer, and
replies with a grade from 1 to 10 (`JudgeScorer`, the scorer interface of engine.eval.scorers).
`judge_pairwise`: for two answers to the same question it says which is better, "A" or "B"; every
pair is asked in both orders, so a judge that always picks the first answer gives both 0.5, and
each target's win rate is the share of those verdicts it won (`pairwise_win_rates`).

A reply that holds no grade (or no A/B) is asked again: once more in the same conversation with a
plainer instruction, then once sampled at temperature 0.7. A verdict still missing after that is
left out of the means and reported in `failures`, never a crash. Judging is greedy otherwise, so
the same judge gives the same grades.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from engine.errors import EvalError, RunCancelled
from engine.eval.targets import check_gguf

GRADE_RUBRIC = (
    "You are grading an ANSWER to a QUESTION against a REFERENCE answer.\n"
    "10 means as correct, complete and useful as the reference; 1 means wrong, off-topic or "
    "empty.\n\nQUESTION:\n{question}\n\nREFERENCE:\n{reference}\n\nANSWER:\n{answer}\n\n"
    "Reply with the grade only: one whole number from 1 to 10."
)
PAIR_RUBRIC = (
    "Two answers were given to the same QUESTION. Judged against the REFERENCE answer, which "
    "one is better?\n\nQUESTION:\n{question}\n\nREFERENCE:\n{reference}\n\n"
    "ANSWER A:\n{a}\n\nANSWER B:\n{b}\n\nReply with one letter only: A or B."
)
GRADE_AGAIN = "Reply with one whole number from 1 to 10 and nothing else."
PAIR_AGAIN = "Reply with the single letter A or B and nothing else."
MAX_REPLY_TOKENS = 8
RETRY_TEMPERATURE = 0.7
_INTEGER = re.compile(r"\d+")
_LETTER = re.compile(r"\b([AB])\b")


def check_judge(path: str | Path) -> Path:
    """The judge GGUF file (a `pypi:PACKAGE` shipping one is found too); EvalError when it is
    missing or not a GGUF file."""
    return check_gguf(path, "judge")


def parse_grade(reply: str) -> int | None:
    """The first whole number from 1 to 10 in a judge's reply, else None."""
    for found in _INTEGER.finditer(reply):
        value = int(found.group())
        if 1 <= value <= 10:
            return value
    return None


def parse_choice(reply: str) -> str | None:
    """ "A" or "B" from a judge's reply (a lone letter, or the first standalone one), else None."""
    text = reply.strip().strip(".:)(*\"'").strip()
    if text.upper() in ("A", "B"):
        return text.upper()
    found = _LETTER.search(reply)
    return found.group(1) if found else None


class Judge:
    """A judge GGUF loaded in a chat process; `failures` lists the verdicts it never gave."""

    def __init__(self, path: str | Path, n_threads: int | None = None):
        from engine.chat.session import ChatError, ChatSession

        self.path = check_judge(path)
        try:
            self.session = ChatSession(self.path, n_ctx=4096, n_threads=n_threads)
        except ChatError as err:
            raise EvalError(f"judge {self.path}: {err.message}", err.hint) from None
        self.failures: list[str] = []
        self.verdicts = 0  # verdicts asked for (each up to three replies)
        self.transcript: list[tuple[str, str]] = []  # (last request, reply) of every reply

    def ask(self, prompt: str, again: str, parse: Callable[[str], object]) -> tuple[object, str]:
        """(verdict or None, last reply): greedy, then a plainer follow-up, then sampled."""
        from engine.chat.session import ChatError

        messages = [{"role": "user", "content": prompt}]
        reply = ""
        for attempt in range(3):
            turns = messages
            if attempt == 1:
                turns = [*messages, {"role": "assistant", "content": reply}]
                turns.append({"role": "user", "content": again})
            temperature = RETRY_TEMPERATURE if attempt == 2 else 0.0
            try:
                reply = self.session.chat(
                    turns, max_tokens=MAX_REPLY_TOKENS, temperature=temperature
                )
            except ChatError as err:  # e.g. a prompt longer than the judge's context
                return None, f"(no reply: {err.message})"
            self.transcript.append((turns[-1]["content"], reply))
            verdict = parse(reply)
            if verdict is not None:
                return verdict, reply
        return None, reply

    def grade(self, question: str, reference: str, answer: str, where: str = "") -> float:
        """The grade (1-10) of `answer`, or NaN when the judge gave none after the retries."""
        prompt = GRADE_RUBRIC.format(question=question, reference=reference, answer=answer)
        self.verdicts += 1
        grade, reply = self.ask(prompt, GRADE_AGAIN, parse_grade)
        if grade is None:
            self.failures.append(f"{where}no grade in the judge's reply {reply.strip()[:60]!r}")
            return math.nan
        return float(grade)

    def prefer(self, question: str, reference: str, a: str, b: str, where: str = "") -> str | None:
        """ "A" or "B": which answer the judge finds better; None when it never said."""
        prompt = PAIR_RUBRIC.format(question=question, reference=reference, a=a, b=b)
        self.verdicts += 1
        choice, reply = self.ask(prompt, PAIR_AGAIN, parse_choice)
        if choice is None:
            self.failures.append(f"{where}no A or B in the judge's reply {reply.strip()[:60]!r}")
        return choice  # type: ignore[return-value]

    def close(self) -> None:
        """End the judge's chat process."""
        self.session.close()


class JudgeScorer:
    """`judge` as a scorer: score(output, reference, row) is the judge's grade (NaN: none)."""

    name = "judge"

    def __init__(self, judge: Judge):
        self.judge = judge

    def score(self, output: str, reference: str, row: dict) -> float:
        """The grade of `output` for the row's prompt (`prompt_messages`)."""
        question = "\n".join(m["content"] for m in row.get("prompt_messages") or [])
        return self.judge.grade(question, reference, output)


def pairwise_win_rates(
    judge: Judge,
    questions: list[str],
    references: list[str],
    outputs: dict[str, list[str]],
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """Win rates of each target against the others over all rows, both answer orders asked, and
    per row; a target's rate is the share of the decided verdicts that involved it that it won
    (None when none was decided)."""
    labels = list(outputs)
    won = {t: 0 for t in labels}
    seen = {t: 0 for t in labels}
    per_row: dict[str, list[float | None]] = {t: [] for t in labels}
    total = len(questions) * len(labels) * (len(labels) - 1)
    done = 0
    for row, (question, reference) in enumerate(zip(questions, references, strict=True)):
        row_won = {t: 0 for t in labels}
        row_seen = {t: 0 for t in labels}
        for i, first in enumerate(labels):
            for second in labels[i + 1 :]:
                for a, b in ((first, second), (second, first)):  # both orders
                    if cancel and cancel():
                        raise RunCancelled()
                    where = f"row {row + 1}, {a} vs {b}: "
                    choice = judge.prefer(
                        question, reference, outputs[a][row], outputs[b][row], where
                    )
                    done += 1
                    if progress:
                        progress(done, total)
                    if choice is None:
                        continue
                    winner = a if choice == "A" else b
                    for t in (a, b):
                        row_seen[t] += 1
                    row_won[winner] += 1
        for t in labels:
            won[t] += row_won[t]
            seen[t] += row_seen[t]
            per_row[t].append(row_won[t] / row_seen[t] if row_seen[t] else None)
    rates = {t: (won[t] / seen[t] if seen[t] else None) for t in labels}
    return rates, per_row
