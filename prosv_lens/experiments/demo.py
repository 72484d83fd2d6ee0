"""``prosv demo``: the whole pipeline on one concept, on the embedded model, in one run folder.

1. **Data**: a built-in concept (made offline by :mod:`prosv_lens.builder` with the embedded model
   and shipped with the package), or any concept the user names (built now, cached on disk).
2. **Vectors**: PrOSV (``f2+l2``) and FSSV (``all``) trained jointly with the paper's presets, and
   the baselines: DiffMean (factor selected on held-out instructions) and the steering prompt.
3. **Steering score**: every method answers held-out instructions (sampled, temperature 1.0);
   the judge rates concept / instruct / fluency; DiffMean's factor is chosen on the first half,
   everything is scored on the second half (:mod:`prosv_lens.evaluation.steering_eval`).
4. **Utility**: KL damage on neutral prompts and accuracy on the built-in utility set, for every
   method and for FSSV at 80% and 50% of its factor.
5. **Robustness**: answers to prompts that tell the model to avoid the concept, judged against
   the original instruction.
6. **Report**: ``report.md`` (tables with 95% CIs, sample answers, timings), ``results.json``,
   the judged rows (``rows.jsonl``, resumable), the vectors and the figures.

Every stage writes into the run folder; rerunning with the same ``--run`` folder resumes the
judged generations instead of redoing them. The folder is locked while a run works in it, and
it records what produced it (``fingerprint.json``: the settings and package version, checked
before the model loads; ``inputs.json``: the model and the concept data): a resume with other
settings, another model or other data is refused, so judged rows of different runs never mix.
"""

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from prosv_lens._version import __version__
from prosv_lens.baselines import diffmean
from prosv_lens.builder import concept_data
from prosv_lens.concepts import (
    ConceptData,
    builtin_instructions,
)
from prosv_lens.directions import MeanDifference
from prosv_lens.errors import ConfigError
from prosv_lens.evaluation.judges import Judge
from prosv_lens.evaluation.offline_judge import OfflineJudge
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.robustness import suppression_prompts
from prosv_lens.evaluation.steering_eval import (
    KEY_FIELDS,
    EvalConfig,
    EvalTask,
    Method,
    evaluate_steering,
    selected_factor,
    summarize,
    tasks_from,
)
from prosv_lens.evaluation.utility import (
    KLConfig,
    UtilityConfig,
    evaluate_utility,
    kl_damage,
    load_utility_items,
)
from prosv_lens.experiments.demo_report import render_report, write_figures
from prosv_lens.experiments.demo_results import (
    STAGES,
    DemoResults,
    SavedMethodScore,
    TrainingRun,
    UtilityResult,
)
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import DEFAULT_MODEL, LoadedModel, default_layer, load_model, parse_dtype
from prosv_lens.safe_io import RunLock, check_fingerprint, check_writable, write_text
from prosv_lens.training import TrainConfig, train
from prosv_lens.training.checkpoint import data_hash, model_fingerprint
from prosv_lens.vector_io import save_vector

DIFFMEAN_FACTORS = (0.1, 0.2, 0.4, 0.8)  # x the median residual norm at the layer
FSSV_FRACTIONS = (0.8, 0.5)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``prosv demo``; the defaults finish in about 15 minutes on a 2-core CPU.

    Attributes:
        model: the model (default: the embedded SmolLM2-135M-Instruct).
        dtype: its weight dtype (``float32``; ``bfloat16`` on a GPU: see :func:`load_model`).
        concept: a built-in concept name, or any concept (then built with the model and cached).
        layer: steered block (``None``: 40% of the depth, the paper's relative layer).
        epochs: training epochs for PrOSV and FSSV (default: the paper's 12).
        n_train: use only the first N training examples (``None``: all; for quick checks).
        n_eval: held-out instructions; the first half selects DiffMean's factor, the second half
            scores every method.
        max_new_tokens: answer length for the judged generations.
        n_utility: built-in utility items used (``None``: all).
        n_kl_prompts: neutral prompts for KL damage.
        judge: ``"offline"`` (validated embedding + perplexity judge) or ``"llm"``.
        out_dir / run: parent folder of new runs, or an existing run folder to resume.
        seed: sampling seed.
    """

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "smollm2-135m-instruct, gemma-3-270m, tiny, a folder or a hub id"},
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "weight dtype: float32, bfloat16 (the usual choice on a GPU; training keeps "
            "alpha, v and Adam's state in float32), float16, float64"
        },
    )
    concept: str = field(
        default="the ocean",
        metadata={
            "help": "a built-in concept or any concept (its data is built with the model first "
            "and cached)"
        },
    )
    layer: int | None = field(
        default=None,
        metadata={"help": "layer to steer", "min": 0, "default_help": "40% of the depth"},
    )
    epochs: int = field(default=12, metadata={"help": "training epochs", "min": 1})
    n_train: int | None = field(
        default=None, metadata={"help": "training examples", "min": 1, "default_help": "all"}
    )
    n_eval: int = field(default=40, metadata={"help": "held-out instructions", "min": 1})
    max_new_tokens: int = field(default=64, metadata={"help": "answer length", "min": 1})
    n_utility: int | None = field(
        default=None, metadata={"help": "utility items", "min": 1, "default_help": "all"}
    )
    n_kl_prompts: int = field(default=16, metadata={"help": "KL prompts", "min": 1})
    judge: str = field(
        default="offline",
        metadata={
            "choices": ("offline", "llm"),
            "help": "offline or llm: an OpenAI-compatible endpoint from OPENAI_API_KEY, "
            "PROSV_JUDGE_BASE_URL, PROSV_JUDGE_MODEL",
        },
    )
    out_dir: str = field(default="runs", metadata={"help": "parent folder of the run folder"})
    run: str | None = field(default=None, metadata={"help": "an existing run folder to resume"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        """Raises ConfigError (DtypeError for ``dtype``) naming the field, value and fix."""
        parse_dtype(self.dtype)  # DtypeError naming the choices
        if self.judge not in ("offline", "llm"):
            raise ConfigError(
                f"judge must be 'offline' or 'llm', got {self.judge!r}: use --judge offline "
                "(no network) or --judge llm"
            )
        for name in ("model", "concept"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} is blank ({value!r}): name a {name}")
        for name, low in _DEMO_MINIMA.items():
            value = getattr(self, name)
            if value is None and name in _DEMO_OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"{name} must be a whole number >= {low}, got {value!r}: pass "
                    f"--{name.replace('_', '-')} {low} or more"
                )


_DEMO_MINIMA = {
    "layer": 0,
    "epochs": 1,
    "n_train": 1,
    "n_eval": 4,
    "max_new_tokens": 1,
    "n_utility": 1,
    "n_kl_prompts": 1,
}
_DEMO_OPTIONAL = ("layer", "n_train", "n_utility")


_T = TypeVar("_T")


class _Stages:
    """Times each stage and shows progress."""

    def __init__(self, names: list[str]) -> None:
        self.bar = tqdm(total=len(names), desc="prosv demo", unit="stage")
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], _T]) -> _T:
        self.bar.set_postfix_str(name)
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        self.bar.update()
        return out


def make_judge(kind: str, model: LoadedModel) -> Judge:
    """The offline judge (fluency under ``model`` unsteered) or the LLM judge from the env."""
    if kind == "llm":
        from prosv_lens.evaluation.llm_judge import LLMJudge

        return LLMJudge()
    return OfflineJudge(reference=model)


def _fingerprint(cfg: DemoConfig) -> dict:
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "run")}
    return {"kind": "demo", "settings": settings, "package_version": __version__}


def run_demo(cfg: DemoConfig) -> Path:
    """Run the pipeline; returns the run folder (``report.md``, ``results.json``, ...).

    Raises:
        OutputError: the folder cannot be written, or another run is working in it.
        RunMismatchError: ``cfg.run`` holds a run with other settings, model or data.
    """
    run = Path(cfg.run) if cfg.run else Path(cfg.out_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    new = not run.exists()
    check_writable(run, flag="--run" if cfg.run else "--out")
    try:
        with RunLock(run):
            check_fingerprint(run, _fingerprint(cfg), other="another --run")
            return _run_demo(cfg, run)
    except BaseException:
        if new and {p.name for p in run.iterdir()} <= _BOOKKEEPING:  # refused before any result
            shutil.rmtree(run)
        raise


_BOOKKEEPING = {"fingerprint.json", "inputs.json", ".prosv.lock", ".prosv.lock.json"}


def _run_demo(cfg: DemoConfig, run: Path) -> Path:
    t0 = time.perf_counter()
    st = _Stages(list(STAGES))
    model = st.run("model", lambda: load_model(cfg.model, dtype=cfg.dtype))
    judge = make_judge(cfg.judge, model)
    judge.check()  # before any work: a missing key or embedding model fails here
    layer = cfg.layer if cfg.layer is not None else default_layer(model.n_layers)
    data = st.run("data", lambda: concept_data(model, cfg.concept))
    if cfg.n_train is not None:
        data = data.subset(range(min(len(data), cfg.n_train)))
    inputs = {"model": model_fingerprint(model), "judge": judge.name, "data": data_hash(data)}
    check_fingerprint(run, inputs, name="inputs.json", other="another --run")
    vectors, logs = st.run("train", lambda: _train(model, data, layer, cfg))
    md = st.run("baselines", lambda: _diffmean(model, data, layer))
    direction = md.vector(model, layer, info={"method": "diffmean", "concept": data.name})
    for name, sv in {**vectors, "diffmean": direction}.items():
        save_vector(sv, run / "vectors" / name, overwrite=True)  # retrained identically on resume
    methods = [
        Method.unsteered(),
        Method.prompt(),
        Method.factor_search("diffmean", direction, DIFFMEAN_FACTORS, unit=md.resid_norm),
        Method.vector("prosv", vectors["prosv"]),
        Method.vector("fssv", vectors["fssv"]),
    ]
    # One batch per (method, factor, half): 20 held-out answers each at the default n_eval.
    eval_cfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=32)
    instructions = list(builtin_instructions("eval"))[: cfg.n_eval]
    log = ResultLog(run / "rows.jsonl", KEY_FIELDS)
    st.run(
        "steering",
        lambda: evaluate_steering(
            model, data.name, methods, tasks_from(instructions), judge, log, eval_cfg
        ),
    )
    factor = selected_factor(log.rows, data.name, "diffmean")
    assert factor is not None, "diffmean's candidates are the numeric DIFFMEAN_FACTORS"
    chosen = {
        "prompt": None,
        "diffmean": direction.replace(alpha=factor * md.resid_norm),
        "prosv": vectors["prosv"],
        "fssv": vectors["fssv"],
        **{f"fssv {f:.0%}": vectors["fssv"].scaled(f) for f in FSSV_FRACTIONS},
    }
    utility = st.run("utility", lambda: _utility(model, data.name, chosen, instructions, cfg))
    st.run(
        "robustness",
        lambda: _robustness(model, data.name, chosen, instructions, judge, log, eval_cfg),
    )
    results = DemoResults(
        config=asdict(cfg),
        model=model.model_id,
        layer=layer,
        concept=data.name,
        n_train=len(data),
        judge=judge.name,
        resid_norm=md.resid_norm,
        diffmean_factor=factor,
        alphas={n: None if v is None else float(v.alpha) for n, v in chosen.items()},
        vector_norms={n: float(v.v.norm()) for n, v in vectors.items()},
        steering=tuple(SavedMethodScore.of(s) for s in summarize(log.rows, "steering")),
        robustness=tuple(SavedMethodScore.of(s) for s in summarize(log.rows, "robustness")),
        utility=utility,
        training=logs,
    )
    figures = st.run("report", lambda: _figures(run, results))
    results = results.with_report(
        figures, {**st.seconds, "total": round(time.perf_counter() - t0, 1)}
    )
    st.bar.close()
    results.save(run / "results.json")
    write_text(run / "report.md", render_report(results, log.rows))
    return run


def _train(
    model: LoadedModel, data: ConceptData, layer: int, cfg: DemoConfig
) -> tuple[dict[str, SteeringVector], dict[str, TrainingRun]]:
    """PrOSV and FSSV with the paper's presets (only the epochs changed), and their logs."""
    vectors: dict[str, SteeringVector] = {}
    logs: dict[str, TrainingRun] = {}
    for name, tc in (
        ("prosv", TrainConfig.prosv(layer, epochs=cfg.epochs)),
        ("fssv", TrainConfig.fssv(layer, epochs=cfg.epochs)),
    ):
        result = train(model, data, tc, progress=False)
        vectors[name] = result.vectors[data.name]
        logs[name] = TrainingRun.of(round(result.seconds, 1), result.logs[data.name])
    return vectors, logs


def _diffmean(model: LoadedModel, data: ConceptData, layer: int) -> MeanDifference:
    if data.negatives is None:
        raise ValueError(f"concept data {data.name!r} has no neutral responses for DiffMean")
    negatives = replace(data, responses=data.negatives, negatives=None)
    return diffmean(model, data, negatives, layer)


def _utility(
    model: LoadedModel, concept: str, chosen: dict, instructions: list[str], cfg: DemoConfig
) -> dict[str, UtilityResult]:
    """KL damage (held-out instructions as neutral prompts) and built-in utility accuracy."""
    items = load_utility_items()[: cfg.n_utility]
    ucfg = UtilityConfig(batch_size=32)
    kl_prompts = instructions[: cfg.n_kl_prompts]
    base = evaluate_utility(model, None, items, ucfg).accuracy
    out = {"unsteered": UtilityResult(accuracy=base, kl=None)}
    for name, sv in chosen.items():
        if sv is None:  # the prompt baseline: the same items / continuations behind the prompt
            render = Method.prompt().render
            prompted = [replace(it, prompt=render(it.prompt, concept)) for it in items]
            acc = evaluate_utility(model, None, prompted, ucfg).accuracy
            steered_prompts = [render(p, concept) for p in kl_prompts]
            kl = kl_damage(
                model, None, kl_prompts, KLConfig(batch_size=16), steered_prompts=steered_prompts
            )
        else:
            acc = evaluate_utility(model, sv, items, ucfg).accuracy
            kl = kl_damage(model, sv, kl_prompts, KLConfig(batch_size=16))
        out[name] = UtilityResult(accuracy=acc, kl=kl.estimate)
    return out


def _robustness(model, concept, chosen, instructions, judge, log, eval_cfg) -> None:  # noqa: ANN001
    test = instructions[len(instructions) // 2 :]
    attacks = suppression_prompts(test, concept, seed=eval_cfg.seed)
    offset = len(instructions) // 2
    tasks = [EvalTask(offset + i, a.instruction, a.prompt) for i, a in enumerate(attacks)]
    methods = [Method.unsteered()] + [
        Method.prompt() if sv is None else Method.vector(name, sv) for name, sv in chosen.items()
    ]
    evaluate_steering(
        model, concept, methods, tasks, judge, log, eval_cfg, suite="robustness", split=False
    )


def _figures(run: Path, results: DemoResults) -> tuple[str, ...]:
    """Draw the run's figures; their paths relative to the run folder."""
    return tuple(str(p.relative_to(run)) for p in write_figures(run / "figures", results))
