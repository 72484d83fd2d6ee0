"""The project's judge prompts for the three criteria, and the parser of the judge's answers.

Each template asks for a short reason and then a last line ``Rating: [[N]]`` with N in 0/1/2.
The wording is the project's own (AxBench's criteria, not its text). Bump
:data:`PROMPT_VERSION` whenever a template changes: it is part of the LLM judge's name, and the
full prompt is part of every cache key, so old cached completions are never reused.
"""

import re

from prosv_lens.evaluation.judges import CRITERIA, JudgeItem

PROMPT_VERSION = "prosv-judge-v1"
"""Changes whenever a template changes; part of :attr:`LLMJudge.name`."""

_ANSWER_FORMAT = (
    "First give one or two sentences of reasoning. Then finish with a last line of exactly this "
    "form, where N is 0, 1 or 2:\nRating: [[N]]"
)

TEMPLATES: dict[str, str] = {
    "concept": (
        "You are grading a passage written by a language model. Question: does the passage "
        "contain the concept below?\n\n"
        "Concept: {concept}\n\n"
        "Passage:\n<<<\n{response}\n>>>\n\n"
        "Scale:\n"
        "0 = the concept does not appear in the passage.\n"
        "1 = the concept appears only weakly: a passing mention, a loose association, or an "
        "awkward insertion that is hard to recognise.\n"
        "2 = the concept is plainly and recognisably part of the passage.\n"
        "Grade the concept only; do not let fluency or topic choice change the grade.\n\n"
        + _ANSWER_FORMAT
    ),
    "instruct": (
        "You are grading a reply written by a language model. Question: does the reply deal "
        "with the request it was given?\n\n"
        "Request:\n<<<\n{instruction}\n>>>\n\n"
        "Reply:\n<<<\n{response}\n>>>\n\n"
        "Scale:\n"
        "0 = the reply ignores the request or is about something else entirely.\n"
        "1 = the reply touches the request but drifts away from it, or answers only part of it.\n"
        "2 = the reply clearly deals with what was requested.\n"
        "Material on other subjects lowers the grade only when it crowds out the answer. Do not "
        "grade correctness or style.\n\n" + _ANSWER_FORMAT
    ),
    "fluency": (
        "You are grading a passage written by a language model. Question: is it well-formed, "
        "readable language?\n\n"
        "Passage:\n<<<\n{response}\n>>>\n\n"
        "Scale:\n"
        "0 = broken: mostly gibberish, long loops of repeated words or phrases, or unreadable.\n"
        "1 = readable but flawed: clear grammatical slips, awkward phrasing, or some repetition.\n"
        "2 = fluent, grammatical and natural throughout.\n"
        "Grade the language only, not the topic, the accuracy or whether it answers anything.\n\n"
        + _ANSWER_FORMAT
    ),
}


def judge_prompt(criterion: str, item: JudgeItem) -> str:
    """The user message that asks the judge to rate ``item`` on ``criterion`` (one of CRITERIA)."""
    if criterion not in TEMPLATES:
        raise ValueError(f"unknown criterion {criterion!r}: use one of {CRITERIA}")
    return TEMPLATES[criterion].format(
        concept=item.concept, instruction=item.instruction, response=item.response
    )


_RATING_LABEL = re.compile(r"rating[\s*_]*:", re.IGNORECASE)
# The number may be wrapped in markdown/brackets/quotes, and may be written "N/2".
_RATING_VALUE = re.compile(r"^[\s\[\]\(\)\"'`*_]*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?")
_NOT_A_NUMBER_END = re.compile(r"\.\d|\s*[-–]\s*\d|[A-Za-z0-9]")


def parse_rating(text: str) -> float | None:
    """Read the rating after the last ``Rating:`` label in a judge completion.

    Takes the first non-empty line after the label; tolerates ``[[2]]``, ``**2**``, ``"2"``,
    ``2.``, ``1.5``, ``2/2`` (N out of 2) and trailing words (``2 (clearly present)``).

    Returns:
        The rating in [0, 2], or None when there is no label, no number right after it, the
        number is out of range, or it is out of a scale other than 2 (``8/10``). The caller
        counts None as 0.
    """
    labels = list(_RATING_LABEL.finditer(text))
    if not labels:
        return None
    lines = [line for line in text[labels[-1].end() :].splitlines() if line.strip()]
    if not lines:
        return None
    match = _RATING_VALUE.match(lines[0])
    if match is None:
        return None
    value, scale = float(match.group(1)), match.group(2)
    if scale is not None and float(scale) != 2.0:
        return None
    if _NOT_A_NUMBER_END.match(lines[0][match.end() :]):  # "2x", "2.5.1", "1-2": ambiguous
        return None
    return value if 0.0 <= value <= 2.0 else None
