"""Shared jaxtyping aliases, in TransformerLens axis vocabulary (``batch pos d_model``)."""

from collections.abc import Callable
from typing import Any

from jaxtyping import Bool, Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
AttentionMask = Int[Tensor, "batch pos"]
PosMask = Bool[Tensor, "batch pos"]
Resid = Float[Tensor, "batch pos d_model"]
Logits = Float[Tensor, "batch pos d_vocab"]
StepLogits = Float[Tensor, "batch new_pos d_vocab"]
NextLogits = Float[Tensor, "batch d_vocab"]
Vector = Float[Tensor, " d_model"]
Scalar = Float[Tensor, ""]

HookName = str
# A TransformerLens forward hook, ``fn(activation, hook=hook_point)``: returns the new activation,
# or None to leave it as it is.
HookFn = Callable[[Tensor, Any], Tensor | None]
# One entry of ``fwd_hooks=[...]`` for ``run_with_hooks`` / ``hooks``.
FwdHook = tuple[HookName, HookFn]
