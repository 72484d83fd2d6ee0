"""prosv-lens: train, run and understand prompt-only steering vectors with TransformerLens.

Pipeline (each stage imports only from earlier ones)::

    load_model -> encode_prompts -> ConceptData -> PositionSpec -> SteeringVector / steering()
               -> save_vector / load_vector -> mean_difference -> train() -> generate()
               -> baselines
"""

from prosv_lens._version import __version__
from prosv_lens.baselines import classic_sv_config, diffmean, factor_grid, prompt_steered
from prosv_lens.concepts import (
    ConceptData,
    LabeledResponses,
    load_axbench_concept,
    load_axbench_latent_eval,
    load_jsonl_concept,
)
from prosv_lens.directions import MeanDifference, mean_difference
from prosv_lens.errors import (
    ModelLoadError,
    PositionSpecError,
    PromptError,
    ProsvError,
    SteeringStateError,
    TrainingDivergedError,
    VectorFileError,
    VectorMismatchError,
)
from prosv_lens.generation import (
    CacheEquivalence,
    Generation,
    GenerationConfig,
    check_cache_equivalence,
    generate,
)
from prosv_lens.interventions import (
    AbstractIntervention,
    DecodeState,
    SteeringVector,
    active_hook_count,
    run_with_steering,
    steering,
)
from prosv_lens.models import (
    DEFAULT_MODEL,
    LoadedModel,
    hook_name,
    load_model,
    make_tiny_model,
)
from prosv_lens.positions import FSSV, PROSV_DEFAULT, PositionSpec, ResolvedPositions
from prosv_lens.prompts import TokenBatch, encode_prompts
from prosv_lens.training import TrainConfig, TrainResult, response_loss, train
from prosv_lens.vector_io import load_vector, read_metadata, save_vector

__all__ = [
    "DEFAULT_MODEL",
    "FSSV",
    "PROSV_DEFAULT",
    "AbstractIntervention",
    "ConceptData",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "CacheEquivalence",
    "DecodeState",
    "Generation",
    "GenerationConfig",
    "LabeledResponses",
    "LoadedModel",
    "MeanDifference",
    "ModelLoadError",
    "PositionSpec",
    "PositionSpecError",
    "PromptError",
    "ProsvError",
    "ResolvedPositions",
    "SteeringStateError",
    "SteeringVector",
    "TokenBatch",
    "VectorFileError",
    "VectorMismatchError",
    "__version__",
    "active_hook_count",
    "classic_sv_config",
    "diffmean",
    "factor_grid",
    "load_axbench_concept",
    "load_axbench_latent_eval",
    "load_jsonl_concept",
    "prompt_steered",
    "response_loss",
    "train",
    "check_cache_equivalence",
    "encode_prompts",
    "generate",
    "hook_name",
    "load_model",
    "load_vector",
    "make_tiny_model",
    "mean_difference",
    "read_metadata",
    "run_with_steering",
    "save_vector",
    "steering",
]
