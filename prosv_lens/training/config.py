"""Training settings: one frozen config, with the paper's presets for PrOSV and FSSV.

Defaults follow the scaling rules of the paper (``alpha0 = beta * sqrt(d_model)``,
``v_i ~ U(-c/sqrt(d_model), c/sqrt(d_model))``, Adam with separate learning rates for ``v`` and
``alpha``, no weight decay, linear decay to 0 without warm-up, gradient-norm clipping on ``v``
only). The presets are the paper's settings for Gemma-2-2B-it layer 10 (Lang. objective):

* PrOSV (``f2+l2``): beta 4, lr_alpha 10, c 8, lr_v 4e-2, 12 epochs, batch 12;
* FSSV (``all``): beta 2, lr_alpha 1, c 1, lr_v 4e-2, 12 epochs, batch 12.
"""

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from prosv_lens.errors import ConfigError
from prosv_lens.positions import PositionSpec
from prosv_lens.training.objectives import OBJECTIVES

VARIANTS = ("joint", "unit", "fixed_alpha")
OPTIMIZERS = ("adam", "sgd")
PATHS = ("fast", "full")
PARAM_DTYPES = ("float32", "model")


@dataclass(frozen=True)
class TrainConfig:
    """How to train one steering vector per concept.

    Attributes:
        layer: block whose output (``hook_resid_post``) is steered.
        positions: position spec (``f2+l2`` PrOSV, ``all`` FSSV, ...).
        objective: ``lang`` (LM on responses) or ``simpo`` (preference vs neutral responses).
        beta: factor init scale, ``alpha0 = beta * sqrt(d_model)``.
        c: direction init scale, ``v_i ~ U(-c/sqrt(d_model), c/sqrt(d_model))``.
        lr_v, lr_alpha: learning rates of the two parameter groups.
        epochs, batch_size: passes over each concept's data and examples per step per concept.
        variant: ``joint`` (the paper), ``unit`` (v renormalised to unit norm each step), or
            ``fixed_alpha`` (alpha = 1, never trained: the paper's "unusable" ablation).
        optimizer: ``adam`` (the paper) or ``sgd`` (ablation).
        clip_v: gradient-norm clip applied to ``v`` only (``None``: no clipping).
        seed: seeds initialisation and data order (per concept, by concept name).
        max_response_tokens: responses are truncated to this many tokens (AxBench: 128).
        path: ``fast`` (cached residual, blocks above L) or ``full`` (reference: whole model).
        param_dtype: ``float32`` (default): ``alpha``, ``v`` and the optimizer state are fp32
            master copies whatever the model's dtype, and the edit ``alpha * v`` is cast to the
            model's dtype where it is added; ``model``: the authors' numerics, ``alpha`` and ``v``
            are parameters in the model's dtype (bf16 for a bf16 model) and so is Adam's state.
        tf32: allow TF32 matmuls on CUDA while training (off: full fp32 matmuls for fp32 models).
        logits_budget_mb: ceiling (MiB) on the response logits' working set of the fast path:
            the unembedding and log-softmax run over chunks of tokens this big (forward and
            backward), not over all response tokens x vocabulary at once. Memory only: every
            budget gives the same loss and gradients up to float rounding.
        pad_multiple: pad each micro-batch's width up to a multiple of this (right padding that
            no real token sees), so shapes repeat across steps for kernel caches and compiled
            graphs; ``None``: 64 on an accelerator, 1 (no extra padding) on a CPU.
        compile: ``torch.compile`` backend for each block above L of the fast path
            (``"inductor"`` on a GPU; ``"aot_eager"`` traces without generating code); ``None``
            (default): eager. One compile serves every block of the same shape.
    """

    layer: int = field(
        metadata={"help": "block whose output (hook_resid_post) is steered", "min": 0}
    )
    positions: str = field(
        default="f2+l2", metadata={"help": "position spec (f2+l2 PrOSV, all FSSV, ...)"}
    )
    objective: str = field(
        default="lang",
        metadata={
            "choices": OBJECTIVES,
            "help": "lang (LM on responses) or simpo (preference vs neutral responses)",
        },
    )
    beta: float = field(
        default=4.0, metadata={"help": "factor init scale, alpha0 = beta * sqrt(d)"}
    )
    c: float = field(
        default=8.0, metadata={"help": "direction init scale, v_i ~ U(-c/sqrt(d), c/sqrt(d))"}
    )
    lr_v: float = field(default=4e-2, metadata={"help": "learning rate of the direction v"})
    lr_alpha: float = field(default=10.0, metadata={"help": "learning rate of the factor alpha"})
    epochs: int = field(default=12, metadata={"help": "passes over each concept's data", "min": 1})
    batch_size: int = field(
        default=12, metadata={"help": "examples per step per concept", "min": 1}
    )
    variant: str = field(
        default="joint",
        metadata={
            "choices": VARIANTS,
            "help": "joint (the paper), unit (v renormalised each step) or fixed_alpha",
        },
    )
    optimizer: str = field(
        default="adam",
        metadata={"choices": OPTIMIZERS, "help": "adam (the paper) or sgd (ablation)"},
    )
    clip_v: float | None = field(
        default=1.0, metadata={"help": "gradient-norm clip of v only (None: no clipping)"}
    )
    seed: int = field(
        default=42, metadata={"help": "seeds initialisation and data order (per concept)"}
    )
    max_response_tokens: int | None = field(
        default=128, metadata={"help": "responses are cut to this many tokens", "min": 1}
    )
    path: str = field(
        default="fast",
        metadata={
            "choices": PATHS,
            "help": "fast (cached residual, blocks above L) or full (the reference path)",
        },
    )
    param_dtype: str = field(
        default="float32",
        metadata={
            "choices": PARAM_DTYPES,
            "help": "float32: fp32 master copies of alpha, v and Adam's state; model: the "
            "authors' numerics, alpha and v in the model's dtype",
        },
    )
    tf32: bool = field(default=False, metadata={"help": "allow TF32 matmuls on CUDA"})
    logits_budget_mb: int = field(
        default=1024, metadata={"help": "memory (MiB) for one chunk of response logits"}
    )
    pad_multiple: int | None = field(
        default=None,
        metadata={
            "help": "pad micro-batch widths to a multiple",
            "default_help": "64 on a GPU, 1 on a CPU",
        },
    )
    compile: str | None = field(
        default=None,
        metadata={
            "help": "torch.compile backend for the blocks above L (e.g. inductor on a GPU)",
            "default_help": "none, eager",
        },
    )

    def __post_init__(self) -> None:
        PositionSpec.parse(self.positions)  # raises PositionSpecError on a bad spec
        checks = [
            (
                isinstance(self.layer, int) and self.layer >= 0,
                f"layer must be an int >= 0, got {self.layer!r}",
            ),
            (
                self.objective in OBJECTIVES,
                f"objective must be one of {OBJECTIVES}, got {self.objective!r}",
            ),
            (self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}"),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}",
            ),
            (self.path in PATHS, f"path must be one of {PATHS}, got {self.path!r}"),
            (
                self.param_dtype in PARAM_DTYPES,
                f"param_dtype must be one of {PARAM_DTYPES}, got {self.param_dtype!r}",
            ),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1"),
            (
                all(
                    math.isfinite(x) and x > 0
                    for x in (self.beta, self.c, self.lr_v, self.lr_alpha)
                ),
                "beta, c, lr_v and lr_alpha must be finite and > 0",
            ),
            (
                self.clip_v is None or self.clip_v > 0,
                f"clip_v must be > 0 or None, got {self.clip_v}",
            ),
            (
                self.max_response_tokens is None or self.max_response_tokens >= 1,
                f"max_response_tokens must be >= 1 or None, got {self.max_response_tokens}",
            ),
            (
                isinstance(self.seed, int) and self.seed >= 0,
                f"seed must be an int >= 0, got {self.seed!r}",
            ),
            (
                isinstance(self.logits_budget_mb, int) and self.logits_budget_mb > 0,
                f"logits_budget_mb must be an int > 0, got {self.logits_budget_mb!r}",
            ),
            (
                self.pad_multiple is None
                or (isinstance(self.pad_multiple, int) and self.pad_multiple >= 1),
                f"pad_multiple must be an int >= 1 or None, got {self.pad_multiple!r}",
            ),
            (
                self.compile is None or self.path == "fast",
                "compile applies to the fast path's upper blocks: use path='fast' or compile=None",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"bad TrainConfig: {message}")

    @classmethod
    def prosv(cls, layer: int, **overrides: Any) -> "TrainConfig":
        """The paper's PrOSV preset (f2+l2; beta 4, lr_alpha 10, c 8, lr_v 4e-2)."""
        return cls(
            layer=layer,
            **{"positions": "f2+l2", "beta": 4.0, "lr_alpha": 10.0, "c": 8.0, **overrides},
        )

    @classmethod
    def fssv(cls, layer: int, **overrides: Any) -> "TrainConfig":
        """The paper's FSSV preset (all; beta 2, lr_alpha 1, c 1, lr_v 4e-2)."""
        return cls(
            layer=layer, **{"positions": "all", "beta": 2.0, "lr_alpha": 1.0, "c": 1.0, **overrides}
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {sorted(unknown)}: remove them")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)
