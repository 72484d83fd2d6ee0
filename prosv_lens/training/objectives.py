"""Training objectives: pure functions of per-sequence log-probabilities.

Both objectives normalise each example by its own response length, as the paper does:

* ``lang`` — language modelling: ``-log p(y | x) / |y|`` on the response tokens only (prompt
  tokens are never targets).
* ``simpo`` — the preference objective of RePS / the paper ("scaled SimPO", beta = 1, gamma = 0):
  the concept response ``y_w`` is preferred over a neutral response ``y_l`` to the same
  instruction, with the unsteered model as reference::

      L = -log sigmoid( beta * ( max(s * (log p_ref(y_l) - log p_ref(y_w)), 1) / |y_w| * log pi(y_w)
                                 - log pi(y_l) / |y_l| ) - gamma )

  where ``pi`` is the steered model and log-probabilities are sums over response tokens.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

PerExample = Float[Tensor, " batch"]
OBJECTIVES = ("lang", "simpo")


@dataclass(frozen=True)
class SequenceLogprobs:
    """Sum of response-token log-probabilities and response length, per sequence."""

    total: PerExample
    n_tokens: PerExample


def lang_loss(seq: SequenceLogprobs) -> PerExample:
    """Per-example mean negative log-likelihood of the response tokens."""
    return -seq.total / seq.n_tokens


def simpo_loss(
    winner: SequenceLogprobs,
    loser: SequenceLogprobs,
    ref_winner: PerExample,
    ref_loser: PerExample,
    *,
    beta: float = 1.0,
    gamma: float = 0.0,
    scaler: float = 1.0,
) -> PerExample:
    """Per-example scaled-SimPO loss (RePS); ``ref_*`` are the unsteered model's summed log-probs."""
    weight = torch.clamp(scaler * (ref_loser - ref_winner), min=1.0)
    margin = weight * winner.total / winner.n_tokens - loser.total / loser.n_tokens
    return -F.logsigmoid(beta * margin - gamma)
