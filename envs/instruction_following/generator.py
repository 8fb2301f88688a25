"""Seeded instruction-following tasks: a short writing request plus one to three verifiable instructions (IFEval's
ids and kwargs, described in IFEval's own words), each with a reference response that follows every instruction.

The reference is composed from parts (title, sentences about the topic, keyword sentences, bullets, sections,
paragraphs, highlights, placeholders, a postscript, an end phrase; then case, quotation or JSON) and accepted only
if the real checkers say it follows every instruction; the filler length is searched until the length instructions
hold, and a combination no composition satisfies is drawn again. So every task can be solved, and its reference
trajectory passes by construction.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from typing import Any

from envs.instruction_following.checks import CONFLICTS, build, check
from posttrain.errors import UserError

TOPICS = [
    ("the community garden", "a note to a neighbour", ["The garden opens on Saturday morning.",
                                                       "Everyone can bring seeds and tools."]),
    ("a rainy weekend", "a short diary entry", ["The rain did not stop for two days.",
                                                "I read two books and baked bread."]),
    ("learning to swim", "advice for a beginner", ["Start in shallow water and breathe slowly.",
                                                   "Short daily practice helps more than long lessons."]),
    ("the new library hours", "an announcement", ["The library now opens at eight.",
                                                  "It closes at nine on weekdays."]),
    ("a trip to the mountains", "a postcard to a friend", ["The air up here is cold and clear.",
                                                           "We walked to a lake above the clouds."]),
    ("saving energy at home", "a list of tips", ["Turn off lights in empty rooms.",
                                                 "Wash clothes in cold water."]),
    ("a lost cat", "a notice for a street board", ["Our grey cat went missing on Monday.",
                                                   "She has a white spot on her nose."]),
    ("the school science fair", "a report for parents", ["Forty students showed their projects.",
                                                         "The winning project measured rain in the town."]),
    ("starting a book club", "an invitation", ["We will meet once a month at the cafe.",
                                               "The first book is short and easy to find."]),
    ("a bicycle repair", "instructions for a friend", ["First lift the wheel and spin it.",
                                                       "Then look for the leak in the tube."]),
]
FILLER = ["This matters to many people here.", "It takes only a little time.", "Small steps add up over the year.",
          "Most people find it simple once they start.", "It is also a good way to meet others.",
          "The plan can change if the weather turns.", "Feedback is always welcome.",
          "There is more to learn next time.", "We hope to see real results soon.",
          "It works best when done together.", "The first week is always the hardest.",
          "Good notes make the next step easier."]
KEYWORDS = ["sunlight", "patience", "window", "journey", "harvest", "lantern", "bridge", "morning", "notebook",
            "river", "courage", "kitchen"]
FORBIDDEN = ["very", "really", "just", "thing", "stuff", "nice", "basically", "actually"]
END_PHRASES = ["Is there anything else I can help with?", "Let me know if you have additional questions.",
               "Any other questions?"]
MARKERS = ["P.S.", "P.P.S"]
SECTION_WORDS = ["SECTION", "PART"]

# instruction id -> a function drawing its kwargs
KWARGS = {
    "keywords:existence": lambda rng: {"keywords": rng.sample(KEYWORDS, rng.randint(1, 2))},
    "keywords:forbidden_words": lambda rng: {"forbidden_words": rng.sample(FORBIDDEN, 2)},
    "keywords:frequency": lambda rng: {"keyword": rng.choice(KEYWORDS), "frequency": rng.randint(2, 4),
                                       "relation": "at least"},
    "length_constraints:number_words": lambda rng: rng.choice([
        {"num_words": rng.choice([40, 60, 90]), "relation": "at least"},
        {"num_words": rng.choice([60, 80, 120]), "relation": "less than"}]),
    "length_constraints:number_sentences": lambda rng: rng.choice([
        {"num_sentences": rng.randint(3, 7), "relation": "at least"},
        {"num_sentences": rng.randint(6, 10), "relation": "less than"}]),
    "length_constraints:number_paragraphs": lambda rng: {"num_paragraphs": rng.randint(2, 4)},
    "detectable_format:number_bullet_lists": lambda rng: {"num_bullets": rng.randint(2, 5)},
    "detectable_format:title": lambda rng: {},
    "detectable_format:json_format": lambda rng: {},
    "detectable_format:number_highlighted_sections": lambda rng: {"num_highlights": rng.randint(1, 3)},
    "detectable_format:multiple_sections": lambda rng: {"section_spliter": rng.choice(SECTION_WORDS),
                                                        "num_sections": rng.randint(2, 3)},
    "detectable_content:postscript": lambda rng: {"postscript_marker": rng.choice(MARKERS)},
    "detectable_content:number_placeholders": lambda rng: {"num_placeholders": rng.randint(1, 3)},
    "change_case:english_lowercase": lambda rng: {},
    "change_case:english_capital": lambda rng: {},
    "startend:end_checker": lambda rng: {"end_phrase": rng.choice(END_PHRASES)},
    "startend:quotation": lambda rng: {},
    "punctuation:no_comma": lambda rng: {},
    "combination:repeat_prompt": lambda rng: {},  # prompt_to_repeat: the request itself, filled in below
}
MAX_DRAWS = 400


def _conflicts(a: str, b: str) -> bool:
    return b in CONFLICTS.get(a, set()) or a in CONFLICTS.get(b, set()) or a == b


def compose(request: str, sentences: list[str], kwargs: dict[str, dict[str, Any]], filler: int) -> str:
    """A response built to follow the instructions in ``kwargs`` (id -> kwargs), with ``filler`` extra sentences."""
    body = list(sentences)
    k = kwargs
    for word in k.get("keywords:existence", {}).get("keywords", []):
        body.append(f"I keep thinking about the {word}.")
    if "keywords:frequency" in k:
        body += [f"The {k['keywords:frequency']['keyword']} is part of it."] * k["keywords:frequency"]["frequency"]
    if "detectable_content:number_placeholders" in k:
        slots = ["[name]", "[date]", "[place]"][:k["detectable_content:number_placeholders"]["num_placeholders"]]
        body.append("Please reply to " + " and ".join(slots) + ".")
    if "detectable_format:number_highlighted_sections" in k:
        for i in range(k["detectable_format:number_highlighted_sections"]["num_highlights"]):
            body.append(f"*Key point {i + 1}* is worth a look.")
    body += [FILLER[i % len(FILLER)] for i in range(filler)]

    if "detectable_format:multiple_sections" in k:
        spec = k["detectable_format:multiple_sections"]
        n = spec["num_sections"]
        parts = [" ".join(body[i::n]) for i in range(n)]
        text = "\n\n".join(f"{spec['section_spliter']} {i + 1}\n{p}" for i, p in enumerate(parts))
    elif "length_constraints:number_paragraphs" in k:
        n = k["length_constraints:number_paragraphs"]["num_paragraphs"]
        text = "\n***\n".join(" ".join(body[i::n]) for i in range(n))
    else:
        text = " ".join(body)
    if "detectable_format:number_bullet_lists" in k:
        n = k["detectable_format:number_bullet_lists"]["num_bullets"]
        text += "\n\n" + "\n".join(f"* Step {i + 1} is to try it once." for i in range(n))
    if "detectable_format:title" in k:
        text = f"<<Notes on {request.split(' about ')[-1].rstrip('.')}>>\n\n{text}"
    if "detectable_content:postscript" in k:
        text += f"\n\n{k['detectable_content:postscript']['postscript_marker']} Thank you for reading."
    if "startend:end_checker" in k:
        text += "\n\n" + k["startend:end_checker"]["end_phrase"]
    if "combination:repeat_prompt" in k:
        text = f"{k['combination:repeat_prompt']['prompt_to_repeat']}\n\n{text}"
    if "change_case:english_lowercase" in k:
        text = text.lower()
    if "change_case:english_capital" in k:
        text = text.upper()
    if "detectable_format:json_format" in k:
        text = json.dumps({"response": " ".join(text.split())}, ensure_ascii=False)
    if "startend:quotation" in k:
        text = f'"{text}"'
    return text


def make_task(rng: random.Random) -> dict[str, Any] | None:
    """One task, or None when the drawn combination cannot be composed (the caller draws again)."""
    topic, form, sentences = rng.choice(TOPICS)
    request = f"Write {form} about {topic}."
    chosen: list[str] = []
    wanted = rng.choice([1, 2, 2, 3])
    for instruction_id in rng.sample(sorted(KWARGS), len(KWARGS)):
        if len(chosen) == wanted:
            break
        if not any(_conflicts(instruction_id, c) for c in chosen):
            chosen.append(instruction_id)
    kwargs = {i: KWARGS[i](rng) for i in chosen}
    if "combination:repeat_prompt" in kwargs:
        kwargs["combination:repeat_prompt"] = {"prompt_to_repeat": request}
    if "keywords:forbidden_words" in kwargs:  # a forbidden word must not be needed by the other instructions
        needed = " ".join(str(v) for i, v in kwargs.items() if i != "keywords:forbidden_words").lower()
        if any(w in needed for w in kwargs["keywords:forbidden_words"]["forbidden_words"]):
            return None
    instructions = [build(i, kwargs[i], request, "instruction_following generator") for i in chosen]
    prompt = " ".join([request, *(i.description for i in instructions)])
    for filler in range(0, 40):
        response = compose(request, sentences, kwargs, filler)
        if all(v.strict for v in check(response, instructions, prompt)):
            break
    else:
        return None
    digest = hashlib.sha1(json.dumps([prompt, chosen, kwargs], sort_keys=True).encode()).hexdigest()[:12]
    return {"id": f"if-{digest}", "env": "instruction_following", "messages": [{"role": "user", "content": prompt}],
            "tools": [], "prompt": prompt, "instruction_id_list": chosen, "kwargs": [kwargs[i] for i in chosen],
            "reference_response": response}


def generate_tasks(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` distinct tasks (by prompt and instructions), the same ones for the same seed."""
    if n < 0:
        raise UserError(f"number of tasks must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    for made in range(n):
        for _ in range(MAX_DRAWS):
            task = make_task(rng)
            if task is not None and task["id"] not in seen:
                break
        else:
            raise UserError(f"instruction_following generator: could only make {made} distinct tasks, {n} were "
                            "asked for")
        seen.add(task["id"])
        yield task
