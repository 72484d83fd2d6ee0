"""``prosv reproduce`` as work units (:mod:`prosv_lens.experiments.units`), in this process or
on Ray workers (``--concepts-per-unit K``, ``--workers N``, ``--address A``).

:class:`ReproduceJob` splits a reproduction over many concepts into units:

* per block of ``concepts_per_unit`` concepts, one ``train`` unit for PrOSV and one for FSSV
  (the block's concepts in one training pass, as the in-process run trains all pending concepts
  in one pass per kind);
* one shared ``utility`` unit (the unsteered model's task accuracy);
* per concept, one ``eval`` unit after its block's two train units: DiffMean, judged steering
  and utility, as the in-process run does per concept.

A unit runs the in-process run's own functions against a temporary folder laid out like the run
folder and returns the files they wrote, by their path in the run folder
(``concepts/0003/vectors/prosv.safetensors``, ``shared/utility_unsteered.json``, ...). The driver
commits them under ``units/<id>/``, then :func:`assemble` copies the completed units' files into
the run folder and writes the summary as the in-process run does, so ``prosv report`` and
everything reading a reproduction folder read it unchanged.
"""

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prosv_lens._version import __version__
from prosv_lens.concepts import AxBenchTrainingSet
from prosv_lens.errors import ExperimentError
from prosv_lens.evaluation.judges import Judge
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import KEY_FIELDS
from prosv_lens.evaluation.utility import load_utility_items
from prosv_lens.experiments import reproduce as _run
from prosv_lens.experiments.preflight import (
    KINDS,
    ReproduceConfig,
    concept_dir,
    data_hash,
    run_dtype,
    train_config,
)
from prosv_lens.experiments.report import build_summary, format_summary
from prosv_lens.experiments.reproduce_results import (
    ConceptResult,
    ReproduceSummary,
    UnsteeredUtility,
)
from prosv_lens.experiments.units import UNITS_DIR, UnitOutput, UnitStore, WorkUnit
from prosv_lens.models import LoadedModel, load_model
from prosv_lens.safe_io import atomic_write, read_json, write_text
from prosv_lens.training.checkpoint import model_fingerprint

UNSTEERED_FILE = "shared/utility_unsteered.json"


class ReproduceJob:
    """A reproduction's units (see the module docstring); pickled to every Ray worker.

    A worker loads the model (``cfg.model_name`` in the setting's dtype on ``cfg.device``) and
    builds the judge (``judge`` if given, pickled by value with the job, else ``cfg.judge``'s,
    built by :func:`~prosv_lens.experiments.reproduce.make_judge`) on its first unit and keeps
    them. ``sets`` (the concepts' selected data) travel with the job, so workers need neither
    the data source nor the run folder. Pass ``model`` to run in-process with one already
    loaded; it is never pickled.
    """

    def __init__(
        self,
        cfg: ReproduceConfig,
        sets: Sequence[AxBenchTrainingSet],
        concepts_per_unit: int,
        *,
        model: LoadedModel | None = None,
        judge: Judge | None = None,
    ) -> None:
        if concepts_per_unit < 1:
            raise ExperimentError(f"concepts_per_unit must be >= 1, got {concepts_per_unit}")
        self.cfg = cfg
        self.sets = list(sets)
        self.concepts_per_unit = concepts_per_unit
        self.judge = judge
        self._model = model
        self._judge = judge
        self._items: list | None = None
        self._checked = False  # judge.check() done in this process
        self._load_seconds = 0.0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(
            _model=None, _judge=self.judge, _items=None, _checked=False, _load_seconds=0.0
        )  # each worker loads its own
        return state

    def blocks(self) -> list[list[AxBenchTrainingSet]]:
        """The concepts in blocks of ``concepts_per_unit``, in run order."""
        k = self.concepts_per_unit
        return [self.sets[i : i + k] for i in range(0, len(self.sets), k)]

    def units(self) -> list[WorkUnit]:
        """The shared utility unit, then per block its two train units and one eval unit per
        concept. A unit's settings hold what its result depends on within the run (the run's
        fingerprint, checked before any unit runs, holds the rest)."""
        sizes = self.cfg.run_sizes
        units = [
            WorkUnit(
                "utility",
                {
                    "n_utility": sizes.n_utility,
                    "utility_tokens": sizes.utility_tokens,
                    "utility_batch_size": sizes.utility_batch_size,
                },
                "utility, unsteered",
            )
        ]
        settings: dict[str, Any]
        for block in self.blocks():
            ids = [ts.concept_id for ts in block]
            where = f"concept {ids[0]}" + (f"..{ids[-1]}" if len(ids) > 1 else "")
            trains = []
            for kind in KINDS:
                tc = {
                    k: v
                    for k, v in train_config(self.cfg, kind).to_dict().items()
                    if k != "logits_budget_mb"
                }
                settings = {"train": kind, "concepts": ids, "train_config": tc}
                trains.append(WorkUnit("train", settings, f"train {kind} / {where}"))
            units += trains
            for ts in block:
                settings = {"concept": ts.concept_id, "block": ids}
                after = tuple(u.id for u in trains)
                units.append(WorkUnit("eval", settings, f"eval concept {ts.concept_id}", after))
        return units

    def _load(self) -> tuple[LoadedModel, Judge, list]:
        t0 = time.perf_counter()
        cfg = self.cfg
        if self._model is None:
            self._model = load_model(cfg.model_name, device=cfg.device, dtype=run_dtype(cfg))
        if self._judge is None:
            self._judge = _run.make_judge(cfg.judge, self._model)
        if not self._checked:
            self._judge.check()
            self._checked = True
        if self._items is None:
            self._items = load_utility_items()[: cfg.run_sizes.n_utility]
        self._load_seconds += time.perf_counter() - t0
        return self._model, self._judge, self._items

    def prepare(self) -> dict[str, Any]:
        """Load the model, judge and utility items; returns what identifies the run's inputs
        (model weights, each concept's data hash, judge, package version) for ``inputs.json``."""
        model, judge, _ = self._load()
        self._load_seconds = 0.0  # counted in the run's start-up, not in its first unit
        return {
            "model": model_fingerprint(model),
            "data": {str(ts.concept_id): data_hash(ts) for ts in self.sets},
            "judge": judge.name,
            "package_version": __version__,
        }

    def run(self, unit: WorkUnit, inputs: Mapping[str, UnitOutput]) -> UnitOutput:
        """Compute one unit in a temporary run folder; its output's files are the files the
        unit wrote there (by path in the run folder), the given input files excepted."""
        model, judge, items = self._load()
        load_seconds, self._load_seconds = self._load_seconds, 0.0
        t0 = time.perf_counter()
        cfg, quiet = self.cfg, (lambda _: None)
        with tempfile.TemporaryDirectory(prefix="prosv-reproduce-unit-") as tmp:
            out = Path(tmp)
            given: set[str] = set()
            result: dict[str, Any]
            if unit.kind == "utility":
                unsteered = _run._unsteered_utility(cfg, model, out, items)
                result = {"accuracy_mean": float(unsteered.accuracy.mean)}
            elif unit.kind == "train":
                block = self._sets(unit.settings["concepts"])
                kind = unit.settings["train"]
                micro = cfg.resources.micro_rows
                _run._train_pending(cfg, model, out, block, kind, micro, False, quiet)
                result = {"train": kind, "concepts": unit.settings["concepts"]}
            else:
                (ts,) = self._sets([unit.settings["concept"]])
                prefix = concept_dir(Path(), ts).as_posix() + "/"
                for a in unit.after:
                    for name, blob in inputs[a].files.items():
                        if name.startswith(prefix):
                            _write_bytes(out / name, blob)
                            given.add(name)
                bar = _run._Bar(3, cfg.setting.name, False)
                label = f"concept {ts.concept_id}"
                done = _run._concept(cfg, model, judge, out, ts, items, bar, label, quiet)
                result = {"concept": ts.concept_id, "data_sha256": done.data_sha256}
            files = {
                p.relative_to(out).as_posix(): p.read_bytes()
                for p in sorted(out.rglob("*"))
                if p.is_file() and p.relative_to(out).as_posix() not in given
            }
        return UnitOutput(result, files, time.perf_counter() - t0, load_seconds)

    def _sets(self, ids: Sequence[int]) -> list[AxBenchTrainingSet]:
        by_id = {ts.concept_id: ts for ts in self.sets}
        return [by_id[i] for i in ids]


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def check_layout(out: Path, *, units: bool) -> None:
    """Refuse to mix the in-process layout and the work-unit layout in one run folder.

    Raises:
        ExperimentError: ``units`` and ``out`` holds finished results of a run without work
            units, or not ``units`` and ``out`` holds work units.
    """
    has_units = (out / UNITS_DIR).is_dir()
    if units and not has_units:
        finished = any((out / "concepts").glob("*/result.json")) or (out / UNSTEERED_FILE).exists()
        if finished:
            raise ExperimentError(
                f"{out} holds results of a run without work units: resume it without "
                "--concepts-per-unit/--workers/--address, or use another --out"
            )
    if not units and has_units:
        raise ExperimentError(
            f"{out} holds a run in work units: resume it with --concepts-per-unit, --workers "
            "or --address, or use another --out"
        )


def assemble(
    job: ReproduceJob, out: Path, seconds: float
) -> tuple[list[ConceptResult], ReproduceSummary | None]:
    """Copy the completed units' files into the run folder (``concepts/<id>/...``,
    ``shared/...``); with every unit done, write ``summary.json`` and ``summary.md`` as the
    in-process run does (``seconds``: the run's time so far).

    Returns:
        The finished concepts' results, and the summary (``None`` while a unit is missing).
    """
    store = UnitStore(out)
    units = job.units()
    done = [u for u in units if store.is_done(u.id)]
    for unit in done:
        for name, blob in store.output(unit).files.items():
            path = out / name
            if not path.exists() or path.read_bytes() != blob:
                _write_bytes(path, blob)
    results = [
        ConceptResult.load(concept_dir(out, ts) / "result.json")
        for ts in job.sets
        if (concept_dir(out, ts) / "result.json").exists()
    ]
    if len(done) < len(units):
        return results, None
    rows = [
        r
        for ts in job.sets
        for r in ResultLog(concept_dir(out, ts) / "rows.jsonl", KEY_FIELDS).rows
    ]
    unsteered = UnsteeredUtility.load(out / UNSTEERED_FILE)
    summary = build_summary(
        job.cfg.setting, read_json(out / "fingerprint.json"), results, rows, unsteered
    ).with_seconds(round(seconds, 1))
    summary = ReproduceSummary.load(summary.save(out / "summary.json"))
    write_text(out / "summary.md", format_summary(summary))
    return results, summary


def run_units_path(
    cfg: ReproduceConfig,
    out: Path,
    sets: Sequence[AxBenchTrainingSet],
    *,
    concepts_per_unit: int,
    model: LoadedModel | None,
    judge: Judge | None,
    workers: int | None,
    address: str | None,
    cpus_per_worker: int,
    gpus_per_worker: float,
    progress: bool,
    say: Callable[[str], None],
    t0: float,
) -> ReproduceSummary:
    """The units path of :func:`~prosv_lens.experiments.reproduce.run_reproduce` (the caller
    holds the folder's lock and has checked the fingerprint and claimed the concepts).

    Raises:
        RunMismatchError: the folder's ``inputs.json`` names another model, data or judge.
        ExperimentError: a unit failed every try (named; the completed units are kept).
    """
    from prosv_lens.experiments.units import execute_units
    from prosv_lens.safe_io import check_fingerprint

    job = ReproduceJob(cfg, sets, concepts_per_unit, model=model, judge=judge)

    def before(inputs: dict[str, Any]) -> None:
        check_fingerprint(out, inputs, name="inputs.json", other="another --out")

    run = execute_units(
        job,
        out,
        before=before,
        workers=workers,
        address=address,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        progress=progress,
    )
    say(run.format())
    _, summary = assemble(job, out, time.perf_counter() - t0)
    if summary is None:
        raise ExperimentError(
            run.format().replace("\n", "; ") if run.failed else "some units did not run"
        )
    return summary
