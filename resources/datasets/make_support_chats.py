"""Generate support_chats.jsonl: a few hundred customer-support chats in OpenAI `messages` form.

The chats are built from templates with a fixed seed, so the file is byte-for-byte reproducible:

    python resources/datasets/make_support_chats.py            # writes support_chats.jsonl beside it
    python resources/datasets/make_support_chats.py --rows 50 --out /tmp/x.jsonl

The assistant always answers in one house style (greeting with the customer's name, the fix in
numbered steps or one short paragraph, a fixed sign-off), so even a tiny model's loss falls visibly.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

COMPANY = "Brightwave"
SYSTEM = f"You are Ava, the support assistant of {COMPANY} internet."
SIGN_OFF = "Anything else?"

NAMES = ["Maria", "James", "Aisha", "Tom", "Chen", "Lucia", "Omar", "Priya", "Lukas", "Grace",
         "Diego", "Yuki", "Noah", "Fatima", "Elena", "Sam", "Ingrid", "Kwame", "Rosa", "Ivan"]
PLANS = {"Basic": 25, "Plus": 40, "Pro": 60, "Fiber Max": 85}
DEVICES = ["router", "modem", "mesh extender", "set-top box"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
CITIES = ["Leeds", "Porto", "Austin", "Lyon", "Dublin", "Turin", "Denver", "Malmo", "Ghent"]


def _order(rng: random.Random) -> str:
    return f"BW-{rng.randint(10000, 99999)}"


def _greet(name: str) -> str:
    return f"Hi {name}!"


def _steps(items: list[str]) -> str:
    return " ".join(f"{i}. {s}" for i, s in enumerate(items, 1))


# Each topic returns (user text, assistant body) for a customer name and a random source.
def slow_internet(rng: random.Random, name: str) -> tuple[str, str]:
    device = rng.choice(DEVICES[:3])
    speed = rng.choice([3, 5, 8, 12])
    user = rng.choice([
        f"My internet is really slow today, only {speed} Mbps. What can I do?",
        f"Speeds have dropped to about {speed} Mbps since yesterday.",
        f"Why is my connection so slow? The {device} lights look normal.",
    ])
    body = (f"Slow speeds usually come from the {device}. "
            + _steps([f"Unplug your {device} for 30 seconds.",
                      "Run a speed test with a cable.",
                      "Send me the result if it is still slow."]))
    return user, body


def password_reset(rng: random.Random, name: str) -> tuple[str, str]:
    user = rng.choice([
        "I forgot the password for my account.",
        "How do I reset my password? The login page says it is wrong.",
        "I can't log in to the Brightwave app anymore.",
    ])
    body = _steps(["Choose Forgot password on the login page.",
                   "Enter your email address.",
                   "Open the link we send you."])
    return user, body


def billing_question(rng: random.Random, name: str) -> tuple[str, str]:
    plan, price = rng.choice(list(PLANS.items()))
    extra = rng.choice([5, 8, 12, 15])
    month = rng.choice(MONTHS)
    user = rng.choice([
        f"My bill for {month} is {price + extra} euros but my {plan} plan costs {price}. Why?",
        f"Why was I charged {extra} euros extra in {month}?",
    ])
    body = (f"The {plan} plan is {price} euros a month. The extra {extra} euros in {month} is "
            "usually a one-time fee, such as a technician visit. See Billing in the app.")
    return user, body


def upgrade_plan(rng: random.Random, name: str) -> tuple[str, str]:
    old, new = rng.sample(list(PLANS), 2)
    user = rng.choice([
        f"I want to switch from {old} to {new}.",
        f"Can I change my plan to {new}?",
        f"How much is the {new} plan?",
    ])
    body = (f"The {new} plan costs {PLANS[new]} euros a month. "
            + _steps(["Open My plan in the app.",
                      f"Choose {new} and confirm."]))
    return user, body


def moving_house(rng: random.Random, name: str) -> tuple[str, str]:
    city = rng.choice(CITIES)
    day = rng.randint(1, 28)
    month = rng.choice(MONTHS)
    user = rng.choice([
        f"I'm moving to {city} on {month} {day}. Can I take my internet with me?",
        f"We are moving house to {city} next month. What do I need to do?",
    ])
    body = (f"Yes, your contract moves with you to {city}. "
            + _steps(["Enter your new address under Moving in the app.",
                      "Pick a date at least 10 days ahead."]))
    return user, body


def order_status(rng: random.Random, name: str) -> tuple[str, str]:
    order = _order(rng)
    device = rng.choice(DEVICES)
    days = rng.randint(1, 5)
    user = rng.choice([
        f"Where is my new {device}? The order number is {order}.",
        f"Order {order} has not arrived yet.",
    ])
    body = (f"Your {device} ({order}) is on its way and should arrive within {days} working "
            "days.")
    return user, body


def cancel_contract(rng: random.Random, name: str) -> tuple[str, str]:
    user = rng.choice([
        "I want to cancel my contract.",
        "How do I end my Brightwave subscription?",
    ])
    body = ("I am sorry to see you go. "
            + _steps(["Choose Cancel contract under My plan in the app.",
                      "Return the router within 30 days."]))
    return user, body


def wifi_password(rng: random.Random, name: str) -> tuple[str, str]:
    user = rng.choice([
        "How do I change my Wi-Fi password?",
        "I want a new name and password for my Wi-Fi network.",
    ])
    body = _steps(["Open Home network in the app.",
                   "Enter the new name or password under Wi-Fi."])
    return user, body


def opening_hours(rng: random.Random, name: str) -> tuple[str, str]:
    user = rng.choice(["When can I call you?", "What are your opening hours?",
                       "Is the phone line open on Sunday?"])
    return user, "Our phone line is open every day from 8 to 20, and this chat never closes."


def outage(rng: random.Random, name: str) -> tuple[str, str]:
    city = rng.choice(CITIES)
    user = rng.choice([f"Is there an outage in {city}?", f"Internet is down in {city}!"])
    body = (f"There is no known outage in {city} right now. Please restart your router, "
            "and tell me if it is still down.")
    return user, body


TOPICS = [opening_hours, outage, slow_internet, password_reset, billing_question, upgrade_plan, moving_house,
          order_status, cancel_contract, wifi_password]

FOLLOW_UPS = [
    ("Thanks, that worked!", "Great to hear it works now."),
    ("How long will that take?", "It usually takes a few minutes, and never more than one day."),
    ("Do I need to pay for that?", "No, there is no extra cost for this."),
    ("Can I do it by phone instead?", "Yes, call us on 0800 555 010, every day from 8 to 20."),
]


def answer(name: str, body: str, first: bool) -> str:
    opening = _greet(name) + " " if first else ""
    return f"{opening}{body} {SIGN_OFF}"


def make_chat(rng: random.Random) -> dict:
    """One chat: system, a question, the answer, and sometimes one or two follow-up turns."""
    name = rng.choice(NAMES)
    topic = rng.choice(TOPICS)
    user, body = topic(rng, name)
    if rng.random() < 0.3:
        user = f"Hello, this is {name}. {user}"
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer(name, body, first=True)}]
    turns = rng.choices([0, 1, 2], weights=[7, 2, 1])[0]
    for question, reply in rng.sample(FOLLOW_UPS, turns):
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer(name, reply, first=False)})
    return {"messages": messages}


def generate(rows: int = 300, seed: int = 7) -> list[dict]:
    """`rows` chats, the same for the same seed."""
    rng = random.Random(seed)
    return [make_chat(rng) for _ in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("support_chats.jsonl"))
    args = parser.parse_args()
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        for chat in generate(args.rows, args.seed):
            f.write(json.dumps(chat, ensure_ascii=False) + "\n")
    print(f"wrote {args.rows} chats to {args.out}")


if __name__ == "__main__":
    main()
