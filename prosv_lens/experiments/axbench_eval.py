"""``prosv axbench-eval``: PrOSV and FSSV on the first N concepts of an AxBench folder, judged
against the prompt baseline and factor-searched DiffMean, resumable.

1. **train** PrOSV (``f2+l2``) and FSSV (``all``) for every concept in one pass per kind (each
   concept keeps its own ``alpha`` and ``v``; :func:`~prosv_lens.training.train`), saved under
   ``vectors/<kind>/<concept_id>``;
2. per concept, **DiffMean** from its positives and its genre's shared negatives, then **judged
   steering** as AxBench (:func:`~prosv_lens.evaluation.steering_eval.evaluate_steering`:
   DiffMean's factor chosen on the first half of the held-out instructions, every method scored
   on the second half; answers in ``rows.jsonl``, resumable row batch by row batch);
3. ``scores.json`` (an :class:`~prosv_lens.experiments.axbench_results.AxBenchScores`: one
   :class:`~prosv_lens.evaluation.steering_eval.MethodScore` per method, saved; with several
   concepts the CI is a bootstrap over the concepts' means) and the figure
   ``steering_scores.png``/``.pdf``.

The folder is claimed by ``fingerprint.json`` (the settings and package version) and
``inputs.json`` (model weights, judge, data); a rerun with the same command resumes, anything
else is refused, and the folder is locked while a run works in it
(:mod:`~prosv_lens.experiments.run_folder`). ``notebooks/04_axbench_eval.py`` shows the results.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prosv_lens._version import __version__
from prosv_lens.baselines import diffmean
from prosv_lens.concepts import AxBenchTrainingSet, axbench_concepts, builtin_instructions
from prosv_lens.concepts.axbench import load_axbench_training_set
from prosv_lens.errors import ConfigError
from prosv_lens.evaluation.judges import Judge
from prosv_lens.evaluation.offline_judge import OfflineJudge
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import (
    KEY_FIELDS,
    EvalConfig,
    Method,
    MethodScore,
    evaluate_steering,
    summarize,
    tasks_from,
)
from prosv_lens.experiments.axbench_results import AxBenchScores
from prosv_lens.experiments.run_folder import check_fingerprint, claim_folder
from prosv_lens.figures import steering_scores_figure
from prosv_lens.figures.style import save
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import DEFAULT_MODEL, LoadedModel, default_layer, load_model, parse_dtype
from prosv_lens.safe_io import RunLock
from prosv_lens.safe_io import check_fingerprint as check_inputs
from prosv_lens.training import TrainConfig, train
from prosv_lens.training.checkpoint import data_hash, model_fingerprint
from prosv_lens.vector_io import load_vector, save_vector

KIND = "axbench-eval"
KINDS = ("prosv", "fssv")


@dataclass(frozen=True)
class AxBenchSizes:
    """How much of each concept is used; ``full`` is the paper-like run, ``smoke`` a toy one.

    Attributes:
        n_train: positives (and genre negatives, for DiffMean) per concept.
        epochs: training epochs of PrOSV and FSSV.
        n_eval: held-out instructions (first half selects DiffMean's factor, second half scores).
        max_new_tokens: judged answer length.
        diffmean_factors: DiffMean factors searched, as multiples of the median residual norm.
    """

    n_train: int
    epochs: int
    n_eval: int
    max_new_tokens: int
    diffmean_factors: tuple[float, ...]


SIZES = {
    "full": AxBenchSizes(72, 6, 20, 64, (0.05, 0.1, 0.2, 0.4, 0.8)),
    "smoke": AxBenchSizes(12, 1, 4, 8, (0.1, 0.2, 0.4)),
}


@dataclass(frozen=True)
class AxBenchEvalConfig:
    """Settings of ``prosv axbench-eval``.

    Attributes:
        axbench: an AxBench folder or ``hf:`` id (see :func:`~prosv_lens.concepts.resolve_axbench`).
        out: the run folder (rerun the same command to resume).
        n_concepts: the first N concepts of the folder.
        sizes: a key of :data:`SIZES` (``full`` or ``smoke``).
        model, dtype: the model to steer and its weight dtype.
        layer: steered block (``None``: 40% of the depth).
        seed: sampling seed of the judged answers.
    """

    axbench: str = field(
        metadata={"help": "an AxBench folder or hf:pyvene/axbench-concept10/2b/l10-style id"}
    )
    out: str = field(metadata={"help": "run folder; rerun the same command to resume"})
    n_concepts: int = field(
        default=10, metadata={"help": "the first N concepts of the folder", "min": 1}
    )
    sizes: str = field(
        default="full",
        metadata={
            "choices": tuple(SIZES),
            "help": "full (72 examples, 6 epochs, 20 instructions) or smoke (toy sizes)",
        },
    )
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "the model to steer"})
    dtype: str = field(default="float32", metadata={"help": "weight dtype"})
    layer: int | None = field(
        default=None,
        metadata={"help": "steered block", "min": 0, "default_help": "40% of the depth"},
    )
    seed: int = field(default=0, metadata={"help": "sampling seed of the judged answers"})

    def __post_init__(self) -> None:
        """Raises ConfigError (DtypeError for ``dtype``) naming the field, value and fix."""
        parse_dtype(self.dtype)
        if self.sizes not in SIZES:
            raise ConfigError(f"sizes must be one of {', '.join(SIZES)}, got {self.sizes!r}")
        for name, low in (("n_concepts", 1), ("layer", 0)):
            value = getattr(self, name)
            if value is None and name == "layer":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")

    def fingerprint(self) -> dict:
        """What the run folder's results depend on (everything but ``out``)."""
        settings = {k: v for k, v in asdict(self).items() if k != "out"}
        return {"kind": KIND, "settings": settings, "package_version": __version__}


def load_sets(cfg: AxBenchEvalConfig) -> list[AxBenchTrainingSet]:
    """The first ``cfg.n_concepts`` concepts' training sets, cut to ``n_train`` examples each.

    Raises:
        ConceptDataError: the folder is missing or not AxBench data.
        ConfigError: it holds fewer than ``n_concepts`` concepts.
    """
    concepts = axbench_concepts(cfg.axbench)
    if len(concepts) < cfg.n_concepts:
        raise ConfigError(
            f"{cfg.axbench} holds {len(concepts)} concepts, fewer than --concepts "
            f"{cfg.n_concepts}: pass --concepts {len(concepts)} or less"
        )
    n = SIZES[cfg.sizes].n_train
    sets = []
    for meta in concepts[: cfg.n_concepts]:
        ts = load_axbench_training_set(cfg.axbench, meta["concept_id"])
        sets.append(
            AxBenchTrainingSet(
                ts.concept_id,
                ts.concept,
                ts.genre,
                ts.positives.subset(range(min(n, len(ts.positives)))),
                ts.negatives.subset(range(min(n, len(ts.negatives)))),
            )
        )
    return sets


def run_axbench_eval(
    cfg: AxBenchEvalConfig,
    *,
    model: LoadedModel | None = None,
    judge: Judge | None = None,
    log: Callable[[str], None] | None = None,
) -> list[MethodScore]:
    """Run (or resume) ``cfg``; returns the per-method scores (also in ``scores.json``, read
    back as :class:`~prosv_lens.experiments.axbench_results.AxBenchScores`).

    Args:
        cfg: what to run.
        model: an already loaded model to use instead of loading ``cfg.model``.
        judge: a judge instead of the offline one (its ``name`` enters ``inputs.json``).
        log: receives one line per finished stage.

    Raises:
        ProsvError: bad data, a folder of another run or kind, a locked folder, or a model or
            judge other than the one the folder's results came from; all before any work.
    """
    say = log or (lambda _: None)
    out = Path(cfg.out)
    new = not out.exists()
    try:
        claim_folder(out, KIND)
        sets = load_sets(cfg)  # bad data: nothing written, the new folder removed below
        resumed = check_fingerprint(out, cfg.fingerprint())
    except BaseException:
        if new and out.is_dir() and not any(out.iterdir()):  # leave no empty folder behind
            out.rmdir()
        raise
    with RunLock(out):
        model = model or load_model(cfg.model, dtype=cfg.dtype)
        judge = judge or OfflineJudge(reference=model)
        judge.check()
        inputs = {
            "model": model_fingerprint(model),
            "judge": judge.name,
            "data": [data_hash(ts.positives) for ts in sets],
        }
        check_inputs(out, inputs, name="inputs.json", other="another --out")
        say(f"{'resuming' if resumed else 'starting'} in {out}: {len(sets)} concepts")
        layer = cfg.layer if cfg.layer is not None else default_layer(model.n_layers)
        vectors = {kind: _vectors(cfg, model, out, sets, kind, layer, say) for kind in KINDS}
        scores = _judge_all(cfg, model, judge, out, sets, vectors, layer, say)
        title = (
            f"AxBench {Path(cfg.axbench).name}, {len(sets)} concepts — {model.model_id} L{layer}"
        )
        saved = AxBenchScores.of(scores)
        save(steering_scores_figure(saved.methods, title), out / "steering_scores")
        saved.save(out / "scores.json")
        return scores


def _vectors(
    cfg: AxBenchEvalConfig,
    model: LoadedModel,
    out: Path,
    sets: list[AxBenchTrainingSet],
    kind: str,
    layer: int,
    say: Callable[[str], None],
) -> dict[int, SteeringVector]:
    """``kind``'s vector per concept id: loaded if saved, else all trained in one pass."""
    paths = {ts.concept_id: out / "vectors" / kind / str(ts.concept_id) for ts in sets}
    if not all(p.with_suffix(".json").exists() for p in paths.values()):
        make = TrainConfig.prosv if kind == "prosv" else TrainConfig.fssv
        tc = make(layer, epochs=SIZES[cfg.sizes].epochs)
        result = train(model, [ts.positives for ts in sets], tc, progress=False)
        for ts in sets:
            save_vector(result.vectors[ts.positives.name], paths[ts.concept_id], overwrite=True)
        say(f"trained {kind} for {len(sets)} concepts in {result.seconds:.0f} s")
    return {cid: load_vector(p, model) for cid, p in paths.items()}


def _judge_all(
    cfg: AxBenchEvalConfig,
    model: LoadedModel,
    judge: Judge,
    out: Path,
    sets: list[AxBenchTrainingSet],
    vectors: dict[str, dict[int, SteeringVector]],
    layer: int,
    say: Callable[[str], None],
) -> list[MethodScore]:
    """Every method on every concept's held-out instructions; rows already judged are kept."""
    sizes = SIZES[cfg.sizes]
    rows = ResultLog(out / "rows.jsonl", KEY_FIELDS)
    tasks = tasks_from(builtin_instructions("eval")[: sizes.n_eval])
    eval_cfg = EvalConfig(
        max_new_tokens=sizes.max_new_tokens, batch_size=sizes.n_eval, seed=cfg.seed
    )
    for ts in sets:
        md = diffmean(model, ts.positives, ts.negatives, layer)
        direction = md.vector(model, layer)
        methods = [
            Method.unsteered(),
            Method.prompt(),
            Method.factor_search("diffmean", direction, sizes.diffmean_factors, unit=md.resid_norm),
            *(Method.vector(kind, vectors[kind][ts.concept_id]) for kind in KINDS),
        ]
        evaluate_steering(model, ts.concept, methods, tasks, judge, rows, eval_cfg)
        say(f"judged {ts.concept[:60]!r}")
    return summarize(rows.rows)
