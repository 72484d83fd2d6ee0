"""The paper's main-table settings as a frozen registry: model, layer, data, sizes, shape.

A :class:`Setting` names everything a row of the paper's AxBench table depends on: the model and
its dtype, the steered layer, the AxBench Concept10 configuration the concepts come from, the
authors' training hyper-parameters where they differ from the presets, and the paper's sizes
(:class:`RunSizes`). It also embeds the model's architecture shape (:class:`ModelShape`, from the
public Hugging Face configs) so a run can be planned without downloading anything.

The hyper-parameters come from the authors' configuration files (``../shared/docs/paper-notes.md``
§4.3, the ``lang`` objective): Gemma-2-2B layer 10 uses the presets of
:class:`~prosv_lens.training.TrainConfig`; the FSSV of Gemma-2-2B layer 20 uses beta 1; Gemma-2-9B
layer 20 uses beta 2 and lr_alpha 0.1 for both vectors, c 8 and 18 epochs for the FSSV. No
configuration was published for PrOSV at Gemma-2-2B layer 20 (the layer-10 preset is used) nor
for Gemma-2-9B layer 31 (the 9B layer-20 values are used).
"""

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from prosv_lens.errors import ExperimentError, UnknownSettingError

SHARED_AXBENCH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "axbench-concept10"
)
DIFFMEAN_FACTORS = (0.05, 0.1, 0.2, 0.4, 0.8)  # x the median residual norm at the layer
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelShape:
    """What the memory and FLOP estimates need of a decoder-only model.

    Attributes:
        n_layers, d_model, d_mlp: depth, residual width and gated-MLP width.
        n_heads, n_kv_heads, head_dim: query heads, key/value heads (GQA) and head width.
        d_vocab: vocabulary size.
        tied_embeddings: the unembedding shares the embedding matrix.
        attn_softcap, final_softcap: Gemma-2's attention and final-logit soft-caps (``None``: none).
    """

    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_vocab: int
    tied_embeddings: bool = True
    attn_softcap: float | None = None
    final_softcap: float | None = None

    @property
    def block_params(self) -> int:
        """Weights of one block's matmuls (q, k, v, o and the gated MLP; norms ignored)."""
        attn = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        return attn + 3 * self.d_model * self.d_mlp

    @property
    def n_params(self) -> int:
        embeddings = self.d_vocab * self.d_model * (1 if self.tied_embeddings else 2)
        return self.n_layers * self.block_params + embeddings


@dataclass(frozen=True)
class RunSizes:
    """How much of everything a run does (the paper's sizes by default).

    Attributes:
        n_concepts: the first N concepts of the AxBench configuration (Concept10: 10).
        n_train: positives trained on per concept (AxBench: 72); DiffMean also gets as many of
            the genre's shared negatives.
        epochs: training epochs of both vectors (``None``: 12, or the setting's per-vector value).
        batch_size: examples per step per concept (paper: 12).
        max_response_tokens: responses are cut to this many tokens for training (AxBench: 128).
        n_eval: held-out instructions judged per concept; the first half selects DiffMean's
            factor, every method is scored on the second half (AxBench: 10, split 5/5).
        max_new_tokens: answer length judged (AxBench judges the first 128 tokens).
        eval_batch_size: answers generated per batch.
        n_utility: built-in utility items (``None``: all 84); utility_tokens: their answer length.
        n_kl_prompts: neutral prompts for KL damage (continuations of ``utility_tokens``).
        utility_batch_size: items / prompts per batch in the utility stage.
        seed: the sampling seed of the judged generations (training keeps the trainer's seed 42).
    """

    n_concepts: int = field(
        default=10, metadata={"help": "the first N concepts of the data", "min": 1}
    )
    n_train: int = field(default=72, metadata={"help": "training examples per concept", "min": 1})
    epochs: int | None = field(
        default=None,
        metadata={
            "help": "training epochs",
            "min": 1,
            "default_help": "12, or the setting's per-vector value",
        },
    )
    batch_size: int = field(
        default=12, metadata={"help": "examples per step per concept", "min": 1}
    )
    max_response_tokens: int = field(
        default=128, metadata={"help": "training response length", "min": 1}
    )
    n_eval: int = field(
        default=10,
        metadata={"help": "held-out instructions per concept, half select, half score", "min": 1},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "judged answer length", "min": 1})
    eval_batch_size: int = field(
        default=16, metadata={"help": "answers per generation batch", "min": 1}
    )
    n_utility: int | None = field(
        default=None,
        metadata={"help": "built-in utility items", "min": 1, "default_help": "all 84"},
    )
    utility_tokens: int = field(
        default=32, metadata={"help": "utility answer / KL continuation length", "min": 1}
    )
    n_kl_prompts: int = field(default=16, metadata={"help": "KL damage prompts", "min": 1})
    utility_batch_size: int = field(
        default=16, metadata={"help": "utility items / KL prompts per batch", "min": 1}
    )
    seed: int = field(default=0, metadata={"help": "sampling seed of the judged answers"})

    def __post_init__(self) -> None:
        small = [
            f.name
            for f in fields(self)
            if f.name != "seed" and getattr(self, f.name) is not None and getattr(self, f.name) < 1
        ]
        if small:
            raise ExperimentError(f"sizes must be >= 1: {', '.join(small)}")
        if self.n_eval < 2:
            raise ExperimentError(
                f"n_eval must be >= 2 (a selection half and a test half), got {self.n_eval}"
            )

    def replace(self, **changes: Any) -> "RunSizes":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setting:
    """One row of the paper's main table.

    Attributes:
        name: the registry key (``gemma-2-2b-l10``, ...).
        model: what :func:`~prosv_lens.models.load_model` loads (a hub id or an embedded name).
        layer: the steered block.
        dtype: the model's parameter dtype (``bfloat16`` as the paper; ``float32`` on CPU).
        axbench: the AxBench Concept10 source on the hub (``hf:pyvene/axbench-concept10/2b/l10``).
        local_folder: the same configuration's folder name under
            ``../shared/data/axbench-concept10`` (used instead of the hub when it exists).
        shape: the model's architecture shape (plans need no download).
        prosv / fssv: the authors' overrides of the PrOSV / FSSV training presets.
        diffmean_factors: DiffMean's factor grid, in multiples of the median residual norm at
            the layer (selected per concept on the selection half).
        sizes: the paper's sizes.
    """

    name: str
    model: str
    layer: int
    dtype: str
    axbench: str
    local_folder: str | None
    shape: ModelShape
    prosv: tuple[tuple[str, Any], ...] = ()
    fssv: tuple[tuple[str, Any], ...] = ()
    diffmean_factors: tuple[float, ...] = DIFFMEAN_FACTORS
    sizes: RunSizes = RunSizes()

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ExperimentError(
                f"setting {self.name}: dtype must be one of {DTYPES}, got {self.dtype!r}"
            )
        if not 0 <= self.layer < self.shape.n_layers:
            raise ExperimentError(
                f"setting {self.name}: layer {self.layer} outside 0..{self.shape.n_layers - 1}"
            )

    def data_source(self) -> str:
        """The local Concept10 folder when it exists (``$PROSV_AXBENCH_ROOT`` or the shared data
        beside the checkout), else the hub source."""
        root = Path(os.environ.get("PROSV_AXBENCH_ROOT") or SHARED_AXBENCH)
        if self.local_folder and (root / self.local_folder).is_dir():
            return str(root / self.local_folder)
        return self.axbench

    def replace(self, **changes: Any) -> "Setting":
        return replace(self, **changes)


GEMMA2_2B = ModelShape(26, 2304, 9216, 8, 4, 256, 256000, True, 50.0, 30.0)
GEMMA2_9B = ModelShape(42, 3584, 14336, 16, 8, 256, 256000, True, 50.0, 30.0)
SMOLLM2_135M = ModelShape(30, 576, 1536, 9, 3, 64, 49152, True)

_9B_PROSV = (("beta", 2.0), ("lr_alpha", 0.1))
_9B_FSSV = (("beta", 2.0), ("lr_alpha", 0.1), ("c", 8.0), ("epochs", 18))


def _gemma(size: str, layer: int, shape: ModelShape, **kw: Any) -> Setting:
    return Setting(
        name=f"gemma-2-{size}-l{layer}",
        model=f"google/gemma-2-{size}-it",
        layer=layer,
        dtype="bfloat16",
        axbench=f"hf:pyvene/axbench-concept10/{size}/l{layer}",
        local_folder=f"prod_{size}_l{layer}_v1",
        shape=shape,
        **kw,
    )


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        _gemma("2b", 10, GEMMA2_2B),
        _gemma("2b", 20, GEMMA2_2B, fssv=(("beta", 1.0),)),
        _gemma("9b", 20, GEMMA2_9B, prosv=_9B_PROSV, fssv=_9B_FSSV),
        _gemma("9b", 31, GEMMA2_9B, prosv=_9B_PROSV, fssv=_9B_FSSV),
        Setting(
            name="smollm2-l12",
            model="smollm2-135m-instruct",
            layer=12,
            dtype="float32",
            axbench="hf:pyvene/axbench-concept10/2b/l10",
            local_folder="prod_2b_l10_v1",
            shape=SMOLLM2_135M,
        ),
    )
}


def get_setting(name: str) -> Setting:
    """The registered setting ``name``; an :class:`UnknownSettingError` lists the known ones."""
    if name not in SETTINGS:
        raise UnknownSettingError(f"unknown setting {name!r}: choose one of {', '.join(SETTINGS)}")
    return SETTINGS[name]
