"""Shared jaxtyping aliases, in TransformerLens axis vocabulary (``batch pos d_model``)."""

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
