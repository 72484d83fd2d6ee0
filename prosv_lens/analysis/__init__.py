"""Stage 7 — analysis: how a prompt-only steering edit reaches later tokens through attention.

Every analysis runs the same prompt + continuation teacher-forced, unsteered and steered
(:mod:`~prosv_lens.analysis.paired`), and returns a frozen result with ``save``/``load`` that
plotting reads without a model:

* :func:`attention_flow` — attention mass from answer tokens to the steered positions;
* :func:`path_patching` — restore (necessity) or inject (sufficiency) the steered positions'
  cached keys/values per layer and key/value head;
* :func:`knockout` — cut attention to the steered positions, and what that does alone;
* :func:`effect_decay` — effect size along the answer, PrOSV vs FSSV;
* :func:`vector_logit_lens`, :func:`residual_diff_lens`, :func:`head_attribution` — the edit
  in vocabulary space;

The runner that runs the chosen analyses end to end and saves them with an index,
``run_attention_analysis``, is an experiment: :mod:`prosv_lens.experiments.analysis`. Importing
it (or ``ANALYSES``) from here still works but is deprecated.
"""

from prosv_lens.analysis.attention_flow import AttentionFlowResult, attention_flow
from prosv_lens.analysis.decay import DecayResult, effect_decay, prosv_vs_fssv
from prosv_lens.analysis.knockout import KnockoutResult, knockout
from prosv_lens.analysis.logit_lens import (
    HeadAttributionResult,
    ResidualLensResult,
    VectorLensResult,
    head_attribution,
    residual_diff_lens,
    vector_logit_lens,
)
from prosv_lens.analysis.paired import PairedSequences, pair_sequences, run_pair
from prosv_lens.analysis.path_patching import (
    KVPatch,
    PathPatchingResult,
    generate_under_patch,
    judge_under_patch,
    patched_logits,
    path_patching,
)
from prosv_lens.analysis.results import ResultFileError, SavedResult

__all__ = [
    "AttentionFlowResult",
    "DecayResult",
    "HeadAttributionResult",
    "KVPatch",
    "KnockoutResult",
    "PairedSequences",
    "PathPatchingResult",
    "ResidualLensResult",
    "ResultFileError",
    "SavedResult",
    "VectorLensResult",
    "attention_flow",
    "effect_decay",
    "generate_under_patch",
    "head_attribution",
    "judge_under_patch",
    "knockout",
    "pair_sequences",
    "patched_logits",
    "path_patching",
    "prosv_vs_fssv",
    "residual_diff_lens",
    "run_pair",
    "vector_logit_lens",
]


_MOVED = ("ANALYSES", "run_attention_analysis")


def __getattr__(name: str) -> object:
    """Deprecated: ``ANALYSES`` and ``run_attention_analysis`` from
    :mod:`prosv_lens.experiments.analysis`, imported on first use (the library never imports
    the experiments layer at import time; pyproject's import-linter contract names this one
    exception)."""
    if name in _MOVED:
        from prosv_lens.experiments import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
