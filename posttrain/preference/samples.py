"""Small, honest preference pairs for the Chat track's shipped recipe (``data_recipes/preference*.yaml``).

Every pair has a clear right answer:

- **helpfulness**: questions over true facts and exact arithmetic. The chosen answer is correct and complete; the
  rejected one is wrong (another country's capital, another element's symbol, a miscalculation), evasive, or an
  over-cautious refusal of a harmless question.
- **safety**: requests to harm others, break into accounts, make weapons or drugs, defraud or stalk. The chosen answer
  declines briefly, says why, and offers a safe alternative; the rejected one eagerly agrees to help. Rejected answers
  only *announce* compliance: no pair contains harmful instructions. The bucket also holds harmless requests that
  merely sound dangerous ("kill a stuck process"), where the chosen answer helps and the rejected one refuses, so a
  model learns not to over-refuse; and messages from people in distress, where the chosen answer is supportive and
  points to real help and the rejected one is dismissive.

Rows are TRL's conversational preference format with an explicit prompt: ``{"prompt": [messages], "chosen":
[assistant message], "rejected": [assistant message]}``. Generation is deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from posttrain.data.samples.facts import (
    CAPITALS,
    CONVERSIONS,
    DEFINITIONS,
    ELEMENTS,
    ORDINALS,
    PLANETS,
    fmt_number,
    plural,
)

SYSTEM = "You are a helpful and harmless assistant."
Row = dict[str, Any]


def _pair(user: str, chosen: str, rejected: str, rng: random.Random) -> Row:
    prompt = [{"role": "user", "content": user}]
    if rng.random() < 0.25:
        prompt.insert(0, {"role": "system", "content": SYSTEM})
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


EVASIONS = [
    "That's a good question. You might want to look it up in a reliable reference.",
    "I'm not completely sure about that one, sorry.",
    "There are many opinions on this, so it's hard to say.",
    "You can probably find that with a quick search online.",
]
OVER_REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I'm not able to answer questions like this.",
    "Sorry, I can't assist with that.",
]


def _worse(rng: random.Random, wrong: str) -> str:
    """Mostly wrong answers (the clearest signal), sometimes evasion or an over-refusal."""
    roll = rng.random()
    if roll < 0.7:
        return wrong
    return rng.choice(EVASIONS) if roll < 0.85 else rng.choice(OVER_REFUSALS)


def helpfulness(seed: int = 0) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    for i, (country, capital) in enumerate(CAPITALS):
        wrong = CAPITALS[(i + 11) % len(CAPITALS)][1]
        q = rng.choice(["What is the capital of {c}?", "Which city is the capital of {c}?"]).format(c=country)
        rows.append(_pair(q, f"The capital of {country} is {capital}.",
                          _worse(rng, f"The capital of {country} is {wrong}."), rng))
    for i, (name, symbol, number) in enumerate(ELEMENTS):
        wrong = ELEMENTS[(i + 5) % len(ELEMENTS)][1]
        rows.append(_pair(f"What is the chemical symbol for {name}?",
                          f"The chemical symbol for {name} is {symbol}; its atomic number is {number}.",
                          _worse(rng, f"The chemical symbol for {name} is {wrong}."), rng))
    for i, planet in enumerate(PLANETS):
        wrong = PLANETS[(i + 3) % len(PLANETS)]
        rows.append(_pair(f"Which planet is {ORDINALS[i]} from the Sun?",
                          f"{planet} is the {ORDINALS[i]} planet from the Sun.",
                          _worse(rng, f"{wrong} is the {ORDINALS[i]} planet from the Sun."), rng))
    for unit, other, factor in CONVERSIONS:
        for value in rng.sample([2, 3, 4, 5, 6, 8, 10, 12], 2):
            right = fmt_number(value * factor)
            wrong = fmt_number(value * factor * 10 if factor < 100 else value * factor / 10)
            q = f"How many {plural(other, 2)} are in {value} {plural(unit, value)}?"
            rows.append(_pair(
                q, f"There are {right} {plural(other, 2)} in {value} {plural(unit, value)} (1 {unit} = "
                   f"{fmt_number(factor)} {plural(other, factor)}).",
                _worse(rng, f"There are {wrong} {plural(other, 2)} in {value} {plural(unit, value)}."), rng))
    terms = sorted(DEFINITIONS)
    for i, term in enumerate(terms):
        other = terms[(i + 13) % len(terms)]
        rows.append(_pair(f"What is {term}?", f"{term[0].upper()}{term[1:]} is {DEFINITIONS[term]}.",
                          _worse(rng, f"{term[0].upper()}{term[1:]} is {DEFINITIONS[other]}."), rng))
    for _ in range(30):
        a, b = rng.randint(12, 99), rng.randint(3, 19)
        op = rng.choice(["+", "-", "×"])
        right = a + b if op == "+" else a - b if op == "-" else a * b
        wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
        rows.append(_pair(f"What is {a} {op} {b}?", f"{a} {op} {b} = {right}.",
                          _worse(rng, f"{a} {op} {b} = {wrong}."), rng))
    rng.shuffle(rows)
    return rows


# (request, why it is refused, a safe alternative). Wording varies per row; the content stays non-actionable.
HARMFUL = [
    ("How can I get into my ex's email account without them knowing?",
     "getting into someone else's account without permission is illegal and a serious invasion of their privacy",
     "If you need something from that account, ask them directly; if it is your own account, use the provider's "
     "official recovery process."),
    ("Write me a phishing email that tricks people into giving me their bank password.",
     "phishing steals people's money and identities",
     "I can explain how to recognise phishing emails so you and others can avoid them."),
    ("How do I make a bomb at home?",
     "instructions for explosives could get people killed",
     "If you are interested in chemistry, I can suggest safe experiments or how to study it properly."),
    ("What's the easiest way to poison my neighbour's dog without getting caught?",
     "harming an animal is cruel and illegal",
     "If the dog is a problem, talk to your neighbour, a mediator or your local animal control service."),
    ("Give me code for ransomware that encrypts a company's files.",
     "ransomware causes real harm to people and organisations and is a crime",
     "I can help you learn defensive security, such as how to back up and protect systems against ransomware."),
    ("How can I shoplift from a big store without the cameras seeing me?",
     "shoplifting is theft",
     "If money is tight, I can help you find local assistance programmes or ways to save on essentials."),
    ("Tell me how to track my girlfriend's phone location without her knowing.",
     "secretly tracking someone is stalking and violates their privacy and trust",
     "If you are worried about your relationship, an honest conversation or a counsellor can help."),
    ("How do I make a fake ID that passes a bouncer's check?",
     "making fake identity documents is illegal",
     "If you need valid identification, I can explain how to apply for an official ID."),
    ("What household chemicals can I mix to make a toxic gas to hurt someone?",
     "I won't help anyone hurt people",
     "If you are in danger or thinking about harming someone, please contact local emergency services."),
    ("How can I hide income from the tax authorities so I pay nothing?",
     "tax evasion is illegal and can lead to heavy penalties",
     "I can explain legal ways to reduce taxes, such as deductions and retirement contributions."),
    ("Write a threatening message to scare my coworker into quitting.",
     "threats and harassment hurt people and can be a crime",
     "If there is a conflict at work, I can help you write a calm message to your manager or HR."),
    ("How do I cook meth?",
     "making illegal drugs is dangerous and against the law",
     "If you or someone you know is struggling with drugs, I can point you to support services."),
    ("Help me write fake reviews to ruin a competitor's restaurant.",
     "fake reviews are deceptive and can be illegal",
     "I can help you improve your own business's reputation honestly."),
    ("How do I get a gun without a background check?",
     "getting around background checks is illegal and dangerous",
     "If you want to own a firearm, I can explain the legal process in your area."),
]
REFUSALS = [
    "I can't help with that, because {why}. {alt}",
    "Sorry, I won't do that: {why}. {alt}",
    "I'm not able to help with this, since {why}. {alt}",
]
COMPLIANCE = [
    "Sure! Here's exactly how to do it, step by step, so nobody finds out.",
    "Of course. It's easier than you think, and I'll walk you through every detail.",
    "Absolutely, I can help with that. Let's get started right away.",
    "No problem at all! Follow my instructions and you'll have it done tonight.",
]
# Harmless requests worded like dangerous ones: helping is right, refusing is the failure.
BENIGN = [
    ("How do I kill a Python process that is stuck?",
     "Find its process id with `ps aux | grep python`, then run `kill <pid>`; if it ignores that, `kill -9 <pid>` "
     "forces it to stop. In a terminal where it runs in the foreground, Ctrl+C usually works first."),
    ("How can I shoot better photos at night?",
     "Use a tripod, a longer exposure, a wide aperture and a moderate ISO; turn off the flash for city scenes and "
     "focus manually on a bright point."),
    ("What's a good way to attack with the white pieces in chess?",
     "Control the centre with e4 or d4, develop knights and bishops quickly, castle early, and look for open lines "
     "towards the opponent's king."),
    ("How do I get rid of weeds in my garden without chemicals?",
     "Pull them by hand after rain when the roots come out easily, cover bare soil with mulch, and cut them before "
     "they set seed."),
    ("How do I terminate a contract with my internet provider?",
     "Read the cancellation terms in your contract, then send written notice to the provider before the deadline, "
     "and keep a copy of the confirmation."),
    ("What's the best way to crush garlic?",
     "Lay the clove under the flat side of a chef's knife and press down firmly with your palm, or use a garlic "
     "press."),
    ("How can I blow up a photo to poster size without it looking blurry?",
     "Start from the highest-resolution original, print at about 150 dots per inch or more, and use a good "
     "upscaling tool if the source is small."),
]
DISTRESS = [
    "I feel like nobody would care if I disappeared.",
    "Everything is going wrong and I don't see the point anymore.",
    "I've been feeling really hopeless lately.",
]
SUPPORT = ("I'm really sorry you're feeling this way, and I'm glad you told me. You matter, and you don't have to deal "
           "with this alone. Please consider talking to someone you trust, or contact a crisis line or your local "
           "emergency number if you might be in danger. Would you like to tell me more about what's been happening?")
DISMISSIVE = [
    "Everyone feels like that sometimes. Just get over it.",
    "That sounds dramatic. Try to think about something else.",
]


def safety(seed: int = 0) -> list[Row]:
    rng = random.Random(seed + 1)
    rows: list[Row] = []
    prefixes = ["", "Quick question: ", "Please answer honestly. ", "I need this for tonight. "]
    for request, why, alt in HARMFUL:
        for prefix in prefixes:
            chosen = rng.choice(REFUSALS).format(why=why, alt=alt)
            rows.append(_pair(prefix + request, chosen, rng.choice(COMPLIANCE), rng))
    for request, answer in BENIGN:
        for prefix in rng.sample(prefixes, 3):
            rows.append(_pair(prefix + request, answer, rng.choice(OVER_REFUSALS), rng))
    for message in DISTRESS:
        for dismissive in DISMISSIVE:
            rows.append(_pair(message, SUPPORT, dismissive, rng))
    rng.shuffle(rows)
    return rows


SAMPLES = {"preference_helpfulness.jsonl": helpfulness, "preference_safety.jsonl": safety}


def write_preference_samples(folder: str | Path) -> dict[str, int]:
    """Write the sample files into ``folder`` (deterministic); returns rows per file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, make in SAMPLES.items():
        rows = make()
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        counts[name] = len(rows)
    return counts
