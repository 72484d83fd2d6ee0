"""Evaluation: judges, steering evaluation, utility under steering and robustness."""

from prosv_lens.evaluation.judge_prompts import PROMPT_VERSION, parse_rating
from prosv_lens.evaluation.judge_validation import (
    JudgeValidation,
    format_validation,
    validate_offline_judge,
)
from prosv_lens.evaluation.judges import (
    CRITERIA,
    Judge,
    JudgeItem,
    ParseFailures,
    Rating,
    harmonic_mean,
)
from prosv_lens.evaluation.llm_judge import LLMJudge, LLMJudgeConfig
from prosv_lens.evaluation.offline_judge import OfflineJudge, OfflineJudgeConfig
from prosv_lens.evaluation.records import ResultFileError, ResultLog
from prosv_lens.evaluation.robustness import SuppressionPrompt, suppression_prompts
from prosv_lens.evaluation.stats import Estimate, bootstrap_mean
from prosv_lens.evaluation.steering_eval import (
    EvalConfig,
    EvalTask,
    Method,
    MethodScore,
    evaluate_steering,
    format_scores,
    judge_parse_failures,
    summarize,
    tasks_from,
)
from prosv_lens.evaluation.utility import (
    KLConfig,
    KLDamage,
    UtilityConfig,
    UtilityItem,
    UtilityResult,
    evaluate_utility,
    kl_damage,
    load_tiny_gsm8k,
    load_tiny_mmlu,
    load_utility_items,
)

__all__ = [
    "CRITERIA",
    "PROMPT_VERSION",
    "Estimate",
    "EvalConfig",
    "EvalTask",
    "Judge",
    "JudgeItem",
    "LLMJudge",
    "LLMJudgeConfig",
    "Method",
    "MethodScore",
    "ParseFailures",
    "Rating",
    "ResultFileError",
    "ResultLog",
    "bootstrap_mean",
    "evaluate_steering",
    "format_scores",
    "harmonic_mean",
    "judge_parse_failures",
    "parse_rating",
    "summarize",
    "tasks_from",
    "KLConfig",
    "KLDamage",
    "SuppressionPrompt",
    "UtilityConfig",
    "UtilityItem",
    "UtilityResult",
    "evaluate_utility",
    "kl_damage",
    "load_tiny_gsm8k",
    "load_tiny_mmlu",
    "load_utility_items",
    "suppression_prompts",
    "JudgeValidation",
    "OfflineJudge",
    "OfflineJudgeConfig",
    "format_validation",
    "validate_offline_judge",
]
