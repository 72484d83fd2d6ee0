"""Answer checkers: small pure functions ``(output, **args) -> bool`` named by a JSON spec.

A utility item carries a spec such as ``{"check": "contains_any", "answers": ["Paris"]}``; the
``check`` key names a function in :data:`CHECKERS` and the other keys are its keyword arguments.
:func:`validate_spec` rejects unknown names and bad arguments when an item is built, so a typo in
a data file fails at load time, not after an hour of generation.

Matching rules shared by the checkers: case-insensitive unless stated; a "word" match needs
non-word characters (or the text's ends) on both sides, so ``"red"`` does not match ``"tired"``.
"""

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prosv_lens.errors import CheckSpecError, ProsvError  # noqa: F401 - re-exported

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LIST_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")
_WORD = re.compile(r"[A-Za-z0-9']+")


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE) is not None


def contains_any(output: str, *, answers: Sequence[str]) -> bool:
    """Some answer occurs in the output as a whole word or phrase (case-insensitive)."""
    return any(_has_word(output, a) for a in answers)


def contains_all(output: str, *, answers: Sequence[str]) -> bool:
    """Every answer occurs as a whole word or phrase (case-insensitive)."""
    return all(_has_word(output, a) for a in answers)


def not_contains(output: str, *, words: Sequence[str]) -> bool:
    """No listed word occurs as a whole word (case-insensitive)."""
    return not any(_has_word(output, w) for w in words)


def numbers_in(text: str) -> list[float]:
    """Every number written with digits, in order (``1,234`` -> 1234.0, ``-3.5`` -> -3.5)."""
    return [float(m.replace(",", "")) for m in _NUMBER.findall(text) if m.strip(",-")]


def number(
    output: str, *, value: float | int, mode: str = "last", tolerance: float | int = 1e-6
) -> bool:
    """The output's ``first``, ``last`` or ``any`` digit-written number equals ``value``.

    ``last`` suits worked answers ("3 + 4 = 7"); GSM8K is scored on the last number.
    """
    found = numbers_in(output)
    if not found:
        return False
    pick = {"first": found[:1], "last": found[-1:], "any": found}[mode]
    return any(abs(x - value) <= tolerance for x in pick)


def regex(output: str, *, pattern: str, ignore_case: bool = True) -> bool:
    """``re.search(pattern, output)`` finds a match."""
    return re.search(pattern, output, flags=re.IGNORECASE if ignore_case else 0) is not None


def uppercase(output: str, *, min_letters: int = 3) -> bool:
    """At least ``min_letters`` letters, and every cased letter is upper case."""
    letters = [c for c in output if c.isalpha() and c.lower() != c.upper()]
    return len(letters) >= min_letters and all(c.isupper() for c in letters)


def lowercase(output: str, *, min_letters: int = 3) -> bool:
    """At least ``min_letters`` letters, and every cased letter is lower case."""
    letters = [c for c in output if c.isalpha() and c.lower() != c.upper()]
    return len(letters) >= min_letters and all(c.islower() for c in letters)


def word_count(output: str, *, min_words: int = 1, max_words: int | None = None) -> bool:
    """The number of words (runs of letters, digits, apostrophes) is in ``[min_words, max_words]``."""
    n = len(_WORD.findall(output))
    return n >= min_words and (max_words is None or n <= max_words)


def count_items(output: str) -> int:
    """List items in an answer: lines starting with ``-``, ``*``, ``•``, ``1.`` or ``1)``; if no
    line does, the comma/"and"-separated parts of the first non-empty line."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    marked = sum(1 for ln in lines if _LIST_LINE.match(ln))
    if marked or not lines:
        return marked
    parts = re.split(r",|\band\b", lines[0].strip().rstrip("."))
    return sum(1 for p in parts if p.strip())


def n_items(output: str, *, n: int) -> bool:
    """The answer lists exactly ``n`` items (see :func:`count_items`)."""
    return count_items(output) == n


def word_repeats(output: str, *, word: str, n: int) -> bool:
    """``word`` occurs exactly ``n`` times as a whole word (case-insensitive)."""
    return len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", output, flags=re.IGNORECASE)) == n


def starts_with(output: str, *, prefix: str) -> bool:
    """The stripped output starts with ``prefix`` (case-insensitive)."""
    return output.strip().lower().startswith(prefix.lower())


def chosen_letter(output: str, options: str = "ABCD") -> str | None:
    """The option letter a multiple-choice answer picks, or ``None``.

    Tried in order: "answer is (X)" / "answer: X"; a letter opening the output as "B", "(B)",
    "B." or "B:" (not "A good ..."); a parenthesised letter "(X)" anywhere; then the first standalone capital option letter
    (so the article "A" in running text can be misread: the earlier rules exist to avoid it).
    """
    opts = re.escape(options)
    rules = (
        rf"answer\s*(?:is|:)?\s*:?\s*\(?([{opts}])\b",
        rf"^\s*\(?([{opts}])(?:[).:]|\s*$)",
        rf"\(([{opts}])\)",
        rf"(?<![\w'])([{opts}])(?![\w'])",
    )
    for i, rule in enumerate(rules):
        flags = re.IGNORECASE if i == 0 else 0
        m = re.search(rule, output, flags=flags)
        if m:
            return m.group(1).upper()
    return None


def choice(output: str, *, answer: str, options: str = "ABCD") -> bool:
    """The chosen option letter (see :func:`chosen_letter`) is ``answer``."""
    return chosen_letter(output, options) == answer.upper()


def all_of(output: str, *, of: Sequence[Mapping[str, Any]]) -> bool:
    """Every nested spec passes."""
    return all(run_check(spec, output) for spec in of)


def any_of(output: str, *, of: Sequence[Mapping[str, Any]]) -> bool:
    """Some nested spec passes."""
    return any(run_check(spec, output) for spec in of)


CHECKERS: dict[str, Callable[..., bool]] = {
    "contains_any": contains_any,
    "contains_all": contains_all,
    "not_contains": not_contains,
    "number": number,
    "regex": regex,
    "uppercase": uppercase,
    "lowercase": lowercase,
    "word_count": word_count,
    "n_items": n_items,
    "word_repeats": word_repeats,
    "starts_with": starts_with,
    "choice": choice,
    "all": all_of,
    "any": any_of,
}


def validate_spec(spec: Mapping[str, Any]) -> None:
    """Raise :class:`CheckSpecError` unless ``spec`` names a checker with arguments it takes."""
    name = spec.get("check") if isinstance(spec, Mapping) else None
    if name not in CHECKERS:
        raise CheckSpecError(
            f"unknown checker {name!r} in spec {spec!r}: use one of {', '.join(CHECKERS)}"
        )
    args = {k: v for k, v in spec.items() if k != "check"}
    try:
        inspect.signature(CHECKERS[name]).bind("", **args)
    except TypeError as e:
        raise CheckSpecError(f"bad arguments for checker {name!r} in {spec!r}: {e}") from None
    if name == "number" and args.get("mode", "last") not in ("first", "last", "any"):
        raise CheckSpecError(f"number mode must be first, last or any, got {args['mode']!r}")
    if name == "regex":
        try:
            re.compile(args["pattern"])
        except re.error as e:
            raise CheckSpecError(f"bad regex {args['pattern']!r}: {e}") from None
    if name in ("all", "any"):
        if not args["of"]:
            raise CheckSpecError(f"{name!r} needs a non-empty list 'of' nested specs")
        for inner in args["of"]:
            validate_spec(inner)


def run_check(spec: Mapping[str, Any], output: str) -> bool:
    """Apply the checker a (validated) spec names to ``output``."""
    return bool(CHECKERS[spec["check"]](output, **{k: v for k, v in spec.items() if k != "check"}))
