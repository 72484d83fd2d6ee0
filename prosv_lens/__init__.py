"""prosv-lens: train, run and understand prompt-only steering vectors with TransformerLens.

Pipeline (each stage imports only from earlier ones)::

    load_model -> encode_prompts -> ConceptData -> PositionSpec -> SteeringVector / steering()
               (as TransformerLens hooks: vector.fwd_hooks(batch), steering_hooks())
               -> save_vector / load_vector -> mean_difference -> train() -> generate()
               -> build_concept_data -> baselines
               -> evaluation (judges, evaluate_steering, kl_damage, evaluate_utility)
               -> analysis (pair_sequences -> attention_flow / path_patching / knockout / ...)
               -> figures -> demo
"""

from prosv_lens._version import __version__
from prosv_lens.baselines import classic_sv_config, diffmean, factor_grid, prompt_steered
from prosv_lens.builder import BuildConfig, build_concept_data
from prosv_lens.concepts import (
    ConceptData,
    LabeledResponses,
    builtin_concepts,
    builtin_instructions,
    load_axbench_concept,
    load_axbench_latent_eval,
    load_axbench_training_set,
    load_builtin_concept,
    load_jsonl_concept,
    resolve_axbench,
)
from prosv_lens.directions import MeanDifference, mean_difference
from prosv_lens.errors import (
    JudgeError,
    ModelLoadError,
    PositionSpecError,
    PromptError,
    ProsvError,
    SteeringStateError,
    TrainingDivergedError,
    VectorFileError,
    VectorMismatchError,
)
from prosv_lens.evaluation import (
    EvalConfig,
    Judge,
    JudgeItem,
    LLMJudge,
    LLMJudgeConfig,
    Method,
    OfflineJudge,
    Rating,
    evaluate_steering,
    evaluate_utility,
    kl_damage,
    summarize,
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
    steering_hooks,
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
    "BuildConfig",
    "EvalConfig",
    "Judge",
    "JudgeError",
    "JudgeItem",
    "LLMJudge",
    "LLMJudgeConfig",
    "Method",
    "OfflineJudge",
    "Rating",
    "build_concept_data",
    "builtin_concepts",
    "builtin_instructions",
    "evaluate_steering",
    "evaluate_utility",
    "kl_damage",
    "load_axbench_training_set",
    "load_builtin_concept",
    "resolve_axbench",
    "summarize",
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
    "steering_hooks",
]
