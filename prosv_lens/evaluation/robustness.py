"""Adversarial robustness prompts: instructions rewritten to tell the model to avoid the concept.

Paper §6.4 tests whether a steering vector still brings its concept into the answer when the
prompt itself explicitly forbids that concept. Each :class:`SuppressionPrompt` keeps two texts:

* ``prompt``: what the steered model answers (the instruction plus a suppression request);
* ``instruction``: the *original* instruction, which the judge's instruct-relevance rating is
  taken against (the suppression request is the attack, not part of the task).

The templates are prosv-lens's own, fixed rewrites (the paper had an LLM write one per
instruction); :func:`suppression_prompts` picks one per instruction with a seeded generator, so
a seed always gives the same prompts.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

from prosv_lens.errors import PromptError
from prosv_lens.evaluation.judges import JudgeItem

SUPPRESSION_TEMPLATES: tuple[str, ...] = (
    "{instruction}\n\nImportant: your answer must not mention or hint at {concept}.",
    "Respond to the request below, but keep {concept} completely out of your response.\n\n"
    "{instruction}",
    "{instruction}\n\n(Stay strictly on the task and say nothing at all related to {concept}.)",
    "Task: {instruction}\nRule: do not write about {concept}, not even indirectly.",
    "Without referring to {concept} in any way, do the following.\n{instruction}",
    "I do not want to read anything about {concept}. With that in mind: {instruction}",
)


@dataclass(frozen=True)
class SuppressionPrompt:
    """An attack prompt and the instruction it was built from.

    Attributes:
        instruction: the original instruction (judge instruct relevance against this).
        concept: the concept the prompt tells the model to avoid.
        prompt: the text the model answers.
        template: index into :data:`SUPPRESSION_TEMPLATES`.
    """

    instruction: str
    concept: str
    prompt: str
    template: int

    def judge_item(self, response: str) -> JudgeItem:
        """The item a judge rates: the *original* instruction, the response and the concept."""
        return JudgeItem(self.instruction, response, self.concept)


def suppression_prompts(
    instructions: Sequence[str], concept: str, *, seed: int = 0
) -> list[SuppressionPrompt]:
    """One suppression prompt per instruction, templates drawn with ``random.Random(seed)``.

    The same ``(instructions, concept, seed)`` always gives the same prompts; no global random
    state is read or changed.

    Raises:
        PromptError: no instructions, an empty instruction, or an empty concept.
    """
    if isinstance(instructions, str):
        instructions = [instructions]
    if not instructions:
        raise PromptError("suppression_prompts needs at least one instruction")
    concept = concept.strip()
    if not concept:
        raise PromptError("suppression_prompts needs a non-empty concept description")
    rng = random.Random(seed)
    out = []
    for i, instruction in enumerate(instructions):
        if not instruction.strip():
            raise PromptError(f"instruction {i} is empty")
        t = rng.randrange(len(SUPPRESSION_TEMPLATES))
        text = SUPPRESSION_TEMPLATES[t].format(instruction=instruction.strip(), concept=concept)
        out.append(SuppressionPrompt(instruction, concept, text, t))
    return out
