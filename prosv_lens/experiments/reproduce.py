"""``prosv reproduce``: one row of the paper's main table, end to end, resumable.

For a :class:`~prosv_lens.experiments.settings.Setting` and its AxBench Concept10 concepts:

1. **train** PrOSV (``f2+l2``) and FSSV (``all``) jointly (factor and direction), every pending
   concept in one pass per kind (:func:`~prosv_lens.training.train`, checkpointed every epoch);
2. per concept, **DiffMean** (:func:`~prosv_lens.baselines.diffmean`: 72 positives vs the
   genre's 72 shared negatives), then **judged steering** as AxBench
   (:func:`~prosv_lens.evaluation.steering_eval.evaluate_steering`: DiffMean's factor selected on
   the first half of the held-out instructions, every method scored on the second half; the
   prompt baseline and the unsteered model alongside), then **utility** (built-in task accuracy
   and KL damage under each method, :mod:`prosv_lens.evaluation.utility`);
3. a **summary** over the concepts (``summary.json`` + ``summary.md``).

The saved results are typed (:mod:`prosv_lens.experiments.reproduce_results`): ``result.json``
is a :class:`~prosv_lens.experiments.reproduce_results.ConceptResult`, ``utility.json`` a
:class:`~prosv_lens.experiments.reproduce_results.ConceptUtility`, ``summary.json`` a
:class:`~prosv_lens.experiments.reproduce_results.ReproduceSummary`.

Everything lands in one folder (default ``results/reproduce/<setting>``), each piece written
atomically: ``fingerprint.json`` (what produced the results; a different one is refused),
``concepts/<id>/`` (``concept.json`` with the data hash, ``vectors/``, ``rows.jsonl`` — judged
answers, resumable row batch by row batch —, ``utility.json`` and ``result.json``, which marks the
concept finished), ``shared/`` (unsteered utility, training-pass records). A killed run, rerun
with the same command, skips every finished concept and stage. Before any work the output
folder, the model and data sources, the fingerprint and the memory plan are checked; each
failure is a one-line :class:`~prosv_lens.errors.ProsvError`.
"""

import contextlib
import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from prosv_lens.baselines import diffmean
from prosv_lens.concepts import AxBenchTrainingSet, builtin_instructions
from prosv_lens.errors import ExperimentError, ModelLoadError
from prosv_lens.evaluation.judges import Judge
from prosv_lens.evaluation.offline_judge import NLL_THRESHOLDS, OfflineJudge
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import (
    KEY_FIELDS,
    EvalConfig,
    Method,
    evaluate_steering,
    selected_factor,
    tasks_from,
)
from prosv_lens.evaluation.utility import (
    KLConfig,
    UtilityConfig,
    evaluate_utility,
    kl_damage,
    load_utility_items,
)
from prosv_lens.experiments.plan import DeviceInfo, probe_device
from prosv_lens.experiments.preflight import (
    JUDGE_REFERENCE,
    KIND,
    KINDS,
    ReproduceConfig,
    claim_concepts,
    concept_dir,
    data_hash,
    fingerprint,
    judge_name,
    make_plan,
    model_source_problem,
    run_dtype,
    select_concepts,
    train_config,
)
from prosv_lens.experiments.report import build_summary, concept_result, format_summary
from prosv_lens.experiments.reproduce_results import (
    ConceptResult,
    ConceptUtility,
    ReproduceSummary,
    UnsteeredUtility,
    UtilityResult,
)
from prosv_lens.experiments.run_folder import (
    check_fingerprint,
    claim_folder,
    read_json,
    write_json,
    write_text,
)
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel, load_model
from prosv_lens.safe_io import RunLock
from prosv_lens.training import train
from prosv_lens.vector_io import load_vector, save_vector


class _Bar:
    """One tqdm bar over every stage of every concept (finished stages tick at once)."""

    def __init__(self, total: int, name: str, enabled: bool) -> None:
        self.bar = tqdm(total=total, desc=f"reproduce {name}", unit="stage", disable=not enabled)

    def step(self, label: str) -> None:
        self.bar.set_postfix_str(label)
        self.bar.update()


def make_judge(kind: str, model: LoadedModel) -> Judge:
    """The offline judge (fluency under SmolLM2, the model with fitted thresholds) or the LLM."""
    if kind == "llm":
        from prosv_lens.evaluation.llm_judge import LLMJudge

        return LLMJudge()
    ref = (
        model
        if model.model_id in NLL_THRESHOLDS
        else load_model(JUDGE_REFERENCE, device=model.device)
    )
    return OfflineJudge(reference=ref)


def run_reproduce(
    cfg: ReproduceConfig,
    *,
    model: LoadedModel | None = None,
    judge: Judge | None = None,
    device: DeviceInfo | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    concepts_per_unit: int | None = None,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
) -> ReproduceSummary:
    """Run (or resume) ``cfg``; returns the summary (also in ``summary.json`` / ``summary.md``),
    as read back from ``summary.json``.

    With ``concepts_per_unit``, ``workers`` or ``address`` the run goes in work units
    (:mod:`prosv_lens.experiments.reproduce_units`): in this process (only
    ``concepts_per_unit``) or on Ray workers, after the same checks; the run folder ends up
    with the same layout (plus ``units/`` and ``inputs.json``). A folder is resumed the way it
    was started (with or without units).

    Args:
        cfg: what to run.
        model: an already loaded model to use instead of loading ``cfg.model_name`` (not on
            Ray: each worker loads ``cfg.model_name``).
        judge: a judge to use instead of ``cfg.judge`` (its ``name`` enters the fingerprint; on
            Ray it is pickled to every worker).
        device: the device description for the memory check (default: probed).
        progress: show the progress bars.
        log: receives one line per finished stage.
        concepts_per_unit: concepts per training unit (default with Ray: 1).
        workers: run on a local Ray instance with this many workers (needs ``prosv-lens[ray]``).
        address: run on the Ray cluster at this address (``ray://HOST:PORT`` or ``HOST:PORT``).
        cpus_per_worker: CPU cores (and torch threads) per Ray worker.
        gpus_per_worker: GPUs per Ray worker.

    Raises:
        ProsvError: a bad setting, output folder, data or model source, another run's folder,
            or a run that does not fit the device; all before any work.
        RayUnavailableError: ``workers``/``address`` without Ray installed, or an address that
            cannot be reached (before the folder is made).
    """
    say = log or (lambda _: None)
    t0 = time.perf_counter()
    on_ray = workers is not None or address is not None
    if concepts_per_unit is not None and concepts_per_unit < 1:
        raise ExperimentError(f"concepts_per_unit must be >= 1, got {concepts_per_unit}")
    if on_ray:
        from prosv_lens.experiments.ray_executor import check_address, import_ray

        import_ray()  # no Ray: one line saying how to install it, before any folder is made
        if address is not None and address != "auto":
            check_address(address)
    new = not cfg.out.exists()
    out = claim_folder(cfg.out, KIND)
    try:
        if (model is None or on_ray) and (problem := model_source_problem(cfg.model_name)):
            raise ModelLoadError(problem)
        source = cfg.axbench or cfg.setting.data_source()
        sets = select_concepts(cfg, source)
        device = device or probe_device(cfg.device, run_dtype(cfg))
        plan = make_plan(cfg, device, len(sets))
        plan.check()
        fp = fingerprint(cfg, source, judge_name(cfg, judge), device.type)
        resumed = check_fingerprint(out, fp)
    except BaseException:
        if new and not any(out.iterdir()):  # leave no empty folder behind a refused run
            out.rmdir()
        raise
    with RunLock(out):  # a second run on this folder is refused, naming this one
        in_units = on_ray or concepts_per_unit is not None
        _check_layout(out, units=in_units)
        claim_concepts(out, sets)
        verb = "resuming" if resumed else "starting"
        say(f"{verb} {cfg.setting.name} in {out}: {len(sets)} concepts")
        if in_units:
            from prosv_lens.experiments.reproduce_units import run_units_path

            return run_units_path(
                cfg,
                out,
                sets,
                concepts_per_unit=concepts_per_unit or 1,
                model=None if on_ray else model,
                judge=judge,
                workers=workers,
                address=address,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
                progress=progress,
                say=say,
                t0=t0,
            )
        model = model or load_model(cfg.model_name, device=cfg.device, dtype=run_dtype(cfg))
        judge = judge or make_judge(cfg.judge, model)
        judge.check()
        bar = _Bar(len(KINDS) + 1 + 3 * len(sets), cfg.setting.name, progress)
        micro = cfg.resources.micro_rows  # None: the trainer's default (8 on CPU, fill the GPU)
        for kind in KINDS:
            _train_pending(cfg, model, out, sets, kind, micro, progress, say)
            bar.step(f"train {kind}")
        items = load_utility_items()[: cfg.run_sizes.n_utility]
        unsteered = _unsteered_utility(cfg, model, out, items)
        bar.step("utility, unsteered")
        results = []
        for i, ts in enumerate(sets, 1):
            results.append(
                _concept(cfg, model, judge, out, ts, items, bar, f"concept {i}/{len(sets)}", say)
            )
        rows = [
            r
            for ts in sets
            for r in ResultLog(concept_dir(out, ts) / "rows.jsonl", KEY_FIELDS).rows
        ]
        summary = build_summary(
            cfg.setting, read_json(out / "fingerprint.json"), results, rows, unsteered
        ).with_seconds(round(time.perf_counter() - t0, 1))
        summary = ReproduceSummary.load(summary.save(out / "summary.json"))
        write_text(out / "summary.md", format_summary(summary))
        bar.bar.close()
        return summary


def _check_layout(out: Path, *, units: bool) -> None:
    from prosv_lens.experiments.reproduce_units import check_layout

    check_layout(out, units=units)


def _train_pending(
    cfg: ReproduceConfig,
    model: LoadedModel,
    out: Path,
    sets: Sequence[AxBenchTrainingSet],
    kind: str,
    micro: int | None,
    progress: bool,
    say: Callable[[str], None],
) -> None:
    todo = [ts for ts in sets if not (concept_dir(out, ts) / "vectors" / f"{kind}.json").exists()]
    if not todo:
        return
    tc = train_config(cfg, kind)
    tag = hashlib.sha256("|".join(str(ts.concept_id) for ts in todo).encode()).hexdigest()[:10]
    ckpt = out / "checkpoints" / f"{kind}-{tag}"
    per_epoch = -(-max(len(ts.positives) for ts in todo) // tc.batch_size)
    result = train(
        model,
        [ts.positives for ts in todo],
        tc,
        checkpoint_dir=ckpt,
        checkpoint_every=per_epoch,
        progress=progress,
        micro_rows=micro,
        cache_budget_bytes=cfg.resources.cache_budget_mb << 20,
    )
    for ts in todo:
        vec = result.vectors[ts.positives.name]
        save_vector(
            vec.replace(info={**vec.info, "concept_id": ts.concept_id}),
            concept_dir(out, ts) / "vectors" / kind,
        )
    record = {
        "concepts": [ts.concept_id for ts in todo],
        "steps": result.steps,
        "micro_rows": micro,
        "seconds": round(result.seconds, 1),
        "tokens": result.tokens,
        "examples": result.examples,
    }
    write_json(out / "shared" / f"train-{kind}-{tag}.json", record)
    shutil.rmtree(ckpt, ignore_errors=True)
    with contextlib.suppress(OSError):  # the parent too, once empty
        ckpt.parent.rmdir()
    say(f"trained {kind} for {len(todo)} concepts in {result.seconds:.0f} s")


def _unsteered_utility(
    cfg: ReproduceConfig, model: LoadedModel, out: Path, items: list
) -> UnsteeredUtility:
    path = out / "shared" / "utility_unsteered.json"
    if path.exists():
        return UnsteeredUtility.load(path)
    ucfg = UtilityConfig(
        max_new_tokens=cfg.run_sizes.utility_tokens, batch_size=cfg.run_sizes.utility_batch_size
    )
    result = UnsteeredUtility(evaluate_utility(model, None, items, ucfg).accuracy)
    return UnsteeredUtility.load(result.save(path))


def _vectors(
    model: LoadedModel, folder: Path, ts: AxBenchTrainingSet, layer: int
) -> dict[str, SteeringVector]:
    path = folder / "diffmean"
    if not path.with_suffix(".json").exists():
        md = diffmean(model, ts.positives, ts.negatives, layer)
        info = {"method": "diffmean", "concept": ts.concept, "resid_norm": md.resid_norm}
        direction = md.vector(model, layer, info=info)
        save_vector(direction, path)
    return {name: load_vector(folder / name, model) for name in ("diffmean", *KINDS)}


def _concept(
    cfg: ReproduceConfig,
    model: LoadedModel,
    judge: Judge,
    out: Path,
    ts: AxBenchTrainingSet,
    items: list,
    bar: _Bar,
    label: str,
    say: Callable[[str], None],
) -> ConceptResult:
    folder = concept_dir(out, ts)
    if (folder / "result.json").exists():
        done = ConceptResult.load(folder / "result.json")
        for stage in ("diffmean", "steering", "utility"):
            bar.step(f"{label} {stage} (done)")
        return done
    sizes, seconds, t = cfg.run_sizes, {}, time.perf_counter()
    vec = _vectors(model, folder / "vectors", ts, cfg.setting.layer)
    unit = float(vec["diffmean"].info["resid_norm"])
    seconds["diffmean"] = round(time.perf_counter() - t, 1)
    bar.step(f"{label} diffmean")
    t = time.perf_counter()
    methods = [
        Method.unsteered(),
        Method.prompt(),
        Method.factor_search("diffmean", vec["diffmean"], cfg.setting.diffmean_factors, unit=unit),
        Method.vector("prosv", vec["prosv"]),
        Method.vector("fssv", vec["fssv"]),
    ]
    rows = ResultLog(folder / "rows.jsonl", KEY_FIELDS)
    eval_cfg = EvalConfig(
        max_new_tokens=sizes.max_new_tokens, batch_size=sizes.eval_batch_size, seed=sizes.seed
    )
    tasks = tasks_from(builtin_instructions("eval")[: sizes.n_eval])
    evaluate_steering(model, ts.concept, methods, tasks, judge, rows, eval_cfg)
    factor = selected_factor(rows.rows, ts.concept, "diffmean")
    assert factor is not None, "diffmean's candidates are the numeric setting.diffmean_factors"
    seconds["steering"] = round(time.perf_counter() - t, 1)
    bar.step(f"{label} steering")
    t = time.perf_counter()
    chosen: dict[str, SteeringVector | None] = {
        "prompt": None,
        "diffmean": vec["diffmean"].replace(alpha=factor * unit),
        "prosv": vec["prosv"],
        "fssv": vec["fssv"],
    }
    if (folder / "utility.json").exists():
        utility = ConceptUtility.load(folder / "utility.json")
    else:
        utility = _utility(cfg, model, ts.concept, chosen, items)
        utility = ConceptUtility.load(utility.save(folder / "utility.json"))
    seconds["utility"] = round(time.perf_counter() - t, 1)
    bar.step(f"{label} utility")
    result = concept_result(ts, data_hash(ts), rows.rows, factor, chosen, utility, seconds)
    result = ConceptResult.load(result.save(folder / "result.json"))
    say(f"{label} done: {ts.concept[:60]!r}")
    return result


def _utility(
    cfg: ReproduceConfig,
    model: LoadedModel,
    concept: str,
    chosen: dict[str, SteeringVector | None],
    items: list,
) -> ConceptUtility:
    """Task accuracy and KL damage under each method (the prompt baseline: the same items and
    continuations behind the steering prompt)."""
    sizes = cfg.run_sizes
    ucfg = UtilityConfig(max_new_tokens=sizes.utility_tokens, batch_size=sizes.utility_batch_size)
    kcfg = KLConfig(max_new_tokens=sizes.utility_tokens, batch_size=sizes.utility_batch_size)
    kl_prompts = [it.prompt for it in items[: sizes.n_kl_prompts]]
    render = Method.prompt().render
    out = {}
    for name, sv in chosen.items():
        if sv is None:
            prompted = [replace(it, prompt=render(it.prompt, concept)) for it in items]
            acc = evaluate_utility(model, None, prompted, ucfg).accuracy
            kl = kl_damage(
                model,
                None,
                kl_prompts,
                kcfg,
                steered_prompts=[render(p, concept) for p in kl_prompts],
            )
        else:
            acc = evaluate_utility(model, sv, items, ucfg).accuracy
            kl = kl_damage(model, sv, kl_prompts, kcfg)
        out[name] = UtilityResult(acc, kl.estimate)
    return ConceptUtility(out)
