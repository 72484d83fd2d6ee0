"""Hyper-parameter sweeps behind the paper figures: factor init x factor LR, and token positions.

Each sweep trains one vector per *cell* (one :func:`~prosv_lens.training.train` call per cell,
same data and seed), then measures for that vector:

* ``train_loss_final``: mean training loss over the last epoch's steps;
* ``heldout_loss``: mean per-example response NLL (:func:`response_loss`) on the concept's
  examples that were not trained on (the ``lang`` objective on held-out data);
* the judged steering score (:func:`evaluate_steering` with :meth:`Method.vector`, every held-out
  instruction scored; no factor selection, the learned factor is used as is): one bootstrap
  :class:`Estimate` per criterion and for the overall score.

Everything goes to ``out_dir``: judged answers in ``rows.jsonl`` (a :class:`ResultLog`, so a
killed evaluation resumes) and ``sweep.json`` (``kind``, the sweep config, the unsteered baseline
and one entry per finished cell), rewritten after every cell. A rerun skips the cells already in
``sweep.json``. A cell whose training diverges is recorded with its error, not retried.

The same config and runner scale to a GPU and a bigger model: only ``model``, ``layer`` and the
sizes change. ``prosv_lens.figures.sweeps`` draws ``sweep.json`` without a model.
"""

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin

from prosv_lens._version import __version__
from prosv_lens.builder import concept_data
from prosv_lens.concepts import axbench_concept_ids, builtin_instructions, load_axbench_concept
from prosv_lens.concepts.data import ConceptData
from prosv_lens.errors import (  # noqa: F401 - re-exported
    ConceptDataError,
    ProsvError,
    RunMismatchError,
    SweepError,
    TrainingDivergedError,
)
from prosv_lens.evaluation.judges import Judge
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import (
    KEY_FIELDS,
    EvalConfig,
    Method,
    evaluate_steering,
    summarize,
    tasks_from,
)
from prosv_lens.experiments.sweep_results import SweepResult
from prosv_lens.experiments.units import RunSummary, UnitOutput, UnitStore, WorkUnit, execute_units
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import DTYPES, LoadedModel, load_model
from prosv_lens.positions import PositionSpec
from prosv_lens.safe_io import (
    RunLock,
    check_fingerprint,
    check_writable,
    json_type,
    parse_json_text,
    read_json,
    read_text_file,
    write_json,
    write_text,
)
from prosv_lens.training import TrainConfig, response_loss, train
from prosv_lens.training.checkpoint import data_hash, model_fingerprint
from prosv_lens.training.config import OPTIMIZERS
from prosv_lens.vector_io import load_vector, save_vector

SWEEP_FILE = "sweep.json"
ROWS_FILE = "rows.jsonl"
RUN_FILE = "run.json"
PRESETS = ("prosv", "fssv")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SweepError(message)


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "a string"}


def _type_problem(value: Any, kind: Any) -> str | None:
    """How ``value`` fails the field type ``kind`` (``int``, ``str | None``,
    ``tuple[float, ...]``, ...), or ``None`` if it does not. Booleans are not numbers."""
    if get_origin(kind) is UnionType:
        if value is None:
            return None
        kind = next(a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is tuple:
        item = get_args(kind)[0]
        if not isinstance(value, tuple) or any(_type_problem(x, item) for x in value):
            return f"must be a list of {_TYPE_NAMES[item].removeprefix('a ')}s"
        return None
    if isinstance(value, bool) and kind is not bool:
        ok = False
    elif kind is float:
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, kind)
    return None if ok else f"must be {_TYPE_NAMES[kind]}"


def _check_type(name: str, value: Any, kind: Any) -> None:
    """Raises SweepError naming the field and value if ``value`` is not of type ``kind``."""
    problem = _type_problem(value, kind)
    _check(problem is None, f"{name} {problem}, got {json.dumps(value, default=repr)}")


def _check_types(cfg: Any) -> None:
    """Every field of ``cfg`` of its declared type (a JSON config can hold anything)."""
    for f in fields(cfg):
        _check_type(f.name, getattr(cfg, f.name), f.type)


def _common_checks(cfg: Any) -> None:
    _check_types(cfg)
    _check(cfg.layer >= 0, f"layer must be >= 0, got {cfg.layer!r}")
    for name in ("model", "concept"):
        _check(bool(getattr(cfg, name).strip()), f"{name} must not be blank")
    _check(cfg.epochs >= 1 and cfg.batch_size >= 1, "epochs and batch_size must be >= 1")
    _check(cfg.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    _check(cfg.n_train >= 1, f"n_train must be >= 1, got {cfg.n_train}")
    _check(
        cfg.n_heldout is None or cfg.n_heldout >= 1,
        f"n_heldout must be >= 1 or None, got {cfg.n_heldout}",
    )
    _check(cfg.n_eval >= 1, f"n_eval must be >= 1, got {cfg.n_eval}")
    _check(cfg.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    picks = {
        "concept_id": cfg.concept_id,
        "concept_ids": cfg.concept_ids,
        "n_concepts": cfg.n_concepts,
    }
    chosen = [k for k, v in picks.items() if v is not None]
    _check(
        (cfg.axbench is None and not chosen) or (cfg.axbench is not None and len(chosen) == 1),
        "axbench goes with exactly one of concept_id, concept_ids or n_concepts (set them to "
        f"train on AxBench concepts, or none to use `concept`); got axbench={cfg.axbench!r}, "
        + ", ".join(f"{k}={v!r}" for k, v in picks.items()),
    )
    if cfg.concept_ids is not None:
        ids = cfg.concept_ids
        _check(
            bool(ids) and min(ids) >= 0,
            f"concept_ids must be a non-empty list of ids >= 0, got {ids!r}",
        )
        _check(len(set(ids)) == len(ids), f"concept_ids has repeats {ids!r}")
    _check(
        cfg.n_concepts is None or cfg.n_concepts >= 1,
        f"n_concepts must be >= 1, got {cfg.n_concepts}",
    )
    _check(
        cfg.concepts_per_unit >= 1, f"concepts_per_unit must be >= 1, got {cfg.concepts_per_unit}"
    )


def _from_dict(cls: "type[_SweepConfig]", data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known - {"kind"}
    _check(not unknown, f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
    _check(
        data.get("kind", cls.kind) == cls.kind,
        f"{cls.__name__} needs kind {cls.kind!r}, got {data.get('kind')!r}",
    )
    kinds = {f.name: f.type for f in fields(cls)}
    values = {k: _from_json(v, kinds[k]) for k, v in data.items() if k != "kind"}
    for k, v in values.items():  # before the constructor, whose arguments may be type-checked
        _check_type(k, v, kinds[k])
    return cls(**values)


def _from_json(value: Any, kind: Any) -> Any:
    """``value`` as field type ``kind`` wants it: JSON gives lists for tuples, and ints where
    floats are meant; anything else is left for :func:`_check_type` to name."""
    if get_origin(kind) is UnionType:
        kind = next(a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is not tuple or not isinstance(value, list):
        return value
    if get_args(kind)[0] is float:
        return tuple(float(x) if _type_problem(x, float) is None else x for x in value)
    return tuple(value)


@dataclass(frozen=True)
class _SweepConfig:
    """Fields and (de)serialisation shared by every sweep config (see :class:`HeatmapConfig`)."""

    kind = ""
    model: str = "smollm2-135m-instruct"
    dtype: str = "float32"
    concept: str = "the ocean"
    axbench: str | None = None
    concept_id: int | None = None
    concept_ids: tuple[int, ...] | None = None
    n_concepts: int | None = None
    concepts_per_unit: int = 1
    layer: int = 12
    epochs: int = 4
    batch_size: int = 12
    n_train: int = 32
    n_heldout: int | None = None
    n_eval: int = 8
    max_new_tokens: int = 32
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class HeatmapConfig(_SweepConfig):
    """Factor init (``beta``) x factor learning rate (``lr_alpha``), per optimizer.

    Every other training setting is the PrOSV preset (:meth:`TrainConfig.prosv`) at
    ``positions``. The data: ``concept`` (a built-in concept, or any concept, whose data is then
    built with the model and cached, see :func:`~prosv_lens.builder.concept_data`), or, when
    ``axbench`` (a folder or ``hf:`` id, see :func:`~prosv_lens.concepts.resolve_axbench`) and
    ``concept_id`` are set, that AxBench concept's positives. The first ``n_train`` examples
    train, the next ``n_heldout`` (``None``: all the rest) are held out for the loss, and the
    first ``n_eval`` built-in eval instructions are judged.

    Many concepts in one run: with ``axbench``, ``concept_ids`` (a list) or ``n_concepts`` (the
    folder's first N, e.g. 500 for Concept500) instead of ``concept_id`` runs every cell on each
    concept; ``concepts_per_unit`` concepts share one work unit (see :class:`SweepJob`).
    """

    kind = "heatmap"
    positions: str = "f2+l2"
    betas: tuple[float, ...] = (0.5, 2.0, 8.0)
    lr_alphas: tuple[float, ...] = (0.1, 1.0, 10.0)
    optimizers: tuple[str, ...] = ("adam", "sgd")

    def __post_init__(self) -> None:
        _common_checks(self)
        PositionSpec.parse(self.positions)
        for name in ("betas", "lr_alphas"):
            values = getattr(self, name)
            _check(
                bool(values) and all(math.isfinite(x) and x > 0 for x in values),
                f"{name} must be a non-empty list of finite values > 0, got {values!r}",
            )
            _check(len(set(values)) == len(values), f"{name} has repeated values {values!r}")
        _check(
            bool(self.optimizers) and set(self.optimizers) <= set(OPTIMIZERS),
            f"optimizers must be a non-empty subset of {OPTIMIZERS}, got {self.optimizers!r}",
        )

    def cells(self) -> list[tuple[str, TrainConfig, dict[str, Any]]]:
        """``(key, train config, labels)`` per cell, optimizer-major then beta then lr_alpha."""
        return [
            (
                f"{opt} beta={b:g} lr_alpha={lr:g}",
                TrainConfig.prosv(
                    self.layer,
                    positions=self.positions,
                    beta=float(b),
                    lr_alpha=float(lr),
                    optimizer=opt,
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    seed=self.seed,
                ),
                {"optimizer": opt, "beta": float(b), "lr_alpha": float(lr)},
            )
            for opt in self.optimizers
            for b in self.betas
            for lr in self.lr_alphas
        ]


@dataclass(frozen=True)
class PositionSweepConfig(_SweepConfig):
    """One vector per position spec, every other setting from one preset (``prosv``/``fssv``).

    Data and sizes as in :class:`HeatmapConfig`.
    """

    kind = "positions"
    specs: tuple[str, ...] = ("all", "prompt", "f2+l2", "f4", "l4", "f4+l4", "f8+l8")
    preset: str = "prosv"

    def __post_init__(self) -> None:
        _common_checks(self)
        _check(bool(self.specs), "specs must not be empty")
        _check(len(set(self.specs)) == len(self.specs), f"specs has repeats {self.specs!r}")
        for spec in self.specs:
            PositionSpec.parse(spec)  # raises PositionSpecError naming the bad spec
        _check(self.preset in PRESETS, f"preset must be one of {PRESETS}, got {self.preset!r}")

    def cells(self) -> list[tuple[str, TrainConfig, dict[str, Any]]]:
        """``(key, train config, labels)`` per position spec, in ``specs`` order."""
        make = TrainConfig.prosv if self.preset == "prosv" else TrainConfig.fssv
        return [
            (
                spec,
                make(
                    self.layer,
                    positions=spec,
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    seed=self.seed,
                ),
                {"positions": spec},
            )
            for spec in self.specs
        ]


SweepConfig = HeatmapConfig | PositionSweepConfig
CONFIG_KINDS: dict[str, type[_SweepConfig]] = {
    c.kind: c for c in (HeatmapConfig, PositionSweepConfig)
}


def load_sweep_config(path: str | Path) -> SweepConfig:
    """A sweep config from a JSON file; its ``kind`` (``heatmap``/``positions``) picks the class.

    Raises:
        SweepError: one line naming the problem: a missing, empty, unreadable or non-UTF-8
            file, ``FILE:LINE: not valid JSON``, an unknown field, or a field of the wrong type
            or out of its range (named with its value).
    """
    fix = 'write one JSON object such as {"kind": "heatmap", "betas": [0.5, 2.0]}'
    what = "a sweep config (.json), e.g. configs/heatmap_small.json"
    text = read_text_file(path, what=what, error=SweepError)
    data = parse_json_text(text, path, fix=fix, error=SweepError)
    _check(isinstance(data, dict), f"{path} holds a JSON {json_type(data)}, not an object: {fix}")
    _check(
        isinstance(data, dict) and data.get("kind") in CONFIG_KINDS,
        f'{path}: a sweep config needs "kind" set to one of {sorted(CONFIG_KINDS)}',
    )
    return CONFIG_KINDS[data["kind"]].from_dict(data)


def offline_judge(model: LoadedModel) -> Judge:
    """The default sweep judge: :class:`~prosv_lens.evaluation.offline_judge.OfflineJudge` with
    ``model`` as its fluency reference, embedding each text on its own (``embed_batch_size=1``),
    so a judged row does not depend on which worker judged it or what that worker judged before
    (a module-level function, so workers can receive it)."""
    from prosv_lens.evaluation.offline_judge import OfflineJudge, OfflineJudgeConfig

    return OfflineJudge(reference=model, config=OfflineJudgeConfig(embed_batch_size=1))


def sweep_concepts(cfg: SweepConfig) -> tuple[int | str, ...]:
    """The concepts a sweep runs on: AxBench concept ids, or the one ``concept`` name.

    Raises:
        ConceptDataError: ``concept_ids`` names concepts the AxBench folder lacks, or
            ``n_concepts`` exceeds the concepts it holds.
    """
    if cfg.axbench is None:
        return (cfg.concept,)
    if cfg.concept_id is not None:
        return (cfg.concept_id,)
    if cfg.concept_ids is not None:
        return axbench_concept_ids(cfg.axbench, ids=cfg.concept_ids)
    return axbench_concept_ids(cfg.axbench, first=cfg.n_concepts)


def sweep_data(model: LoadedModel, cfg: SweepConfig, concept: int | str) -> ConceptData:
    """One concept's data: an AxBench concept's positives (an id), or a concept name's data
    (built with ``model`` and cached, see :func:`~prosv_lens.builder.concept_data`)."""
    if isinstance(concept, int):
        assert cfg.axbench is not None  # ids come from an AxBench folder (sweep_concepts)
        return load_axbench_concept(cfg.axbench, concept)
    return concept_data(model, concept)


def concept_folder(cfg: SweepConfig, concept: int | str) -> str:
    """Where a concept's ``sweep.json`` goes inside the sweep folder: the folder itself for a
    one-concept sweep, ``concept_<id>`` for a sweep over many AxBench concepts."""
    return "" if len(sweep_concepts(cfg)) == 1 else f"concept_{concept}"


class SweepJob:
    """A sweep as work units (see :mod:`prosv_lens.experiments.units`): per block of
    ``concepts_per_unit`` concepts, one ``baseline`` unit (the unsteered held-out loss and
    judged answers) and per cell one ``train`` unit (the vectors, their losses) followed by one
    ``eval`` unit (their judged answers), so training and judging can run on different workers.

    A worker loads the model (``cfg.model`` in ``cfg.dtype`` on ``device``), builds the judge
    with ``judge_factory(model)`` and reads each concept's data once, on its first unit. Pass
    ``model`` and ``judge`` to run in-process with ones already loaded; they are never pickled.
    """

    def __init__(
        self,
        cfg: SweepConfig,
        *,
        device: str | None = None,
        judge_factory: Callable[[LoadedModel], Judge] = offline_judge,
        model: LoadedModel | None = None,
        judge: Judge | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.judge_factory = judge_factory
        self._model = model
        self._judge = judge
        self._data: dict[int | str, ConceptData] = {}
        self._load_seconds = 0.0  # loading not yet reported in a UnitOutput
        self._concepts = sweep_concepts(cfg)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(
            _model=None, _judge=None, _data={}, _load_seconds=0.0
        )  # each worker loads its own
        return state

    def blocks(self) -> list[tuple[int | str, ...]]:
        """The concepts in blocks of ``concepts_per_unit``, in order."""
        k = self.cfg.concepts_per_unit
        return [self._concepts[i : i + k] for i in range(0, len(self._concepts), k)]

    def units(self) -> list[WorkUnit]:
        """Per block: the baseline unit, then each cell's train and eval units, in config order."""
        cfg, units = self.cfg, []
        shared = {"layer": cfg.layer, "n_train": cfg.n_train, "n_heldout": cfg.n_heldout}
        judged = {"n_eval": cfg.n_eval, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed}
        for block in self.blocks():
            base = {"concepts": list(block), **shared}
            where = f" / concept {block[0]}" + (f"..{block[-1]}" if len(block) > 1 else "")
            units.append(WorkUnit("baseline", {**base, **judged}, label=f"unsteered{where}"))
            for key, tc, _ in cfg.cells():
                trained = WorkUnit(
                    "train", {**base, "train_config": tc.to_dict()}, f"train {key}{where}"
                )
                units.append(trained)
                settings = {**base, **judged, "key": key, "train_config": tc.to_dict()}
                units.append(WorkUnit("eval", settings, f"eval {key}{where}", (trained.id,)))
        return units

    def _load(self) -> tuple[LoadedModel, Judge]:
        t0 = time.perf_counter()
        if self._model is None:
            self._model = load_model(self.cfg.model, device=self.device, dtype=self.cfg.dtype)
            self._model.hook_name(self.cfg.layer)  # a layer the model lacks: ConfigError
        if self._judge is None:
            self._judge = self.judge_factory(self._model)
        self._load_seconds += time.perf_counter() - t0
        return self._model, self._judge

    def _concept(self, concept: int | str) -> ConceptData:
        """A concept's data, read once per worker."""
        if concept not in self._data:
            model = self._load()[0]
            t0 = time.perf_counter()
            self._data[concept] = sweep_data(model, self.cfg, concept)
            self._load_seconds += time.perf_counter() - t0
        return self._data[concept]

    def _parts(self, concept: int | str) -> tuple[ConceptData, ConceptData, ConceptData]:
        """(all data, training part, held-out part) of a concept.

        Raises:
            SweepError: the concept has too few examples for ``n_train`` plus a held-out part
                (a failure of this concept's units only).
        """
        data, cfg = self._concept(concept), self.cfg
        _check(
            cfg.n_train < len(data),
            f"concept {data.name!r} has {len(data)} examples: n_train={cfg.n_train} leaves "
            "none held out; lower n_train",
        )
        train_part, held_out = data.split(cfg.n_train)
        if cfg.n_heldout is not None:
            held_out = held_out.subset(range(min(cfg.n_heldout, len(held_out))))
        return data, train_part, held_out

    def prepare(self) -> dict[str, Any]:
        """Load the model, judge and data; returns what identifies the run's inputs (model
        weights, data, judge, package version) for ``inputs.json``."""
        model, judge = self._load()
        data = {str(c): data_hash(self._concept(c)) for c in self._concepts}
        self._load_seconds = 0.0  # counted in the run's start-up, not in its first unit
        return {
            "model": model_fingerprint(model),
            "data": data,
            "judge": judge.name,
            "package_version": __version__,
        }

    def run(self, unit: WorkUnit, inputs: Mapping[str, UnitOutput]) -> UnitOutput:
        """Compute one unit (see the class docstring); a diverged training is a result."""
        model, judge = self._load()
        for c in unit.settings["concepts"]:
            self._concept(c)
        load_seconds, self._load_seconds = self._load_seconds, 0.0
        t0 = time.perf_counter()
        concepts = unit.settings["concepts"]
        with tempfile.TemporaryDirectory(prefix="prosv-unit-") as tmp:
            log = ResultLog(Path(tmp) / ROWS_FILE, KEY_FIELDS)
            if unit.kind == "baseline":
                result = {str(c): self._baseline(model, judge, c, log) for c in concepts}
            elif unit.kind == "train":
                result = {str(c): self._train(model, c, unit, Path(tmp)) for c in concepts}
            else:
                (trained,) = (inputs[a] for a in unit.after)
                result = {str(c): self._eval(model, judge, c, unit, trained, log) for c in concepts}
            files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        return UnitOutput({"concepts": result}, files, time.perf_counter() - t0, load_seconds)

    def _eval_setup(self) -> tuple[list, EvalConfig]:
        cfg = self.cfg
        instructions = builtin_instructions("eval")
        _check(
            cfg.n_eval <= len(instructions),
            f"n_eval={cfg.n_eval} > {len(instructions)} eval instructions",
        )
        eval_cfg = EvalConfig(
            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.n_eval, seed=cfg.seed
        )
        return list(tasks_from(instructions[: cfg.n_eval])), eval_cfg

    def _baseline(
        self, model: LoadedModel, judge: Judge, concept: int | str, log: ResultLog
    ) -> dict:
        data, _, held_out = self._parts(concept)
        tasks, eval_cfg = self._eval_setup()
        rows = evaluate_steering(
            model, data.name, [Method.unsteered()], tasks, judge, log, eval_cfg, split=False
        )
        loss = response_loss(model, held_out, None, layer=self.cfg.layer)
        return {
            "concept": data.name,
            "heldout_loss": float(loss.mean()),
            **_scores(rows, "unsteered"),
        }

    def _train(self, model: LoadedModel, concept: int | str, unit: WorkUnit, tmp: Path) -> dict:
        _, train_part, held_out = self._parts(concept)
        tc = TrainConfig.from_dict(unit.settings["train_config"])
        t0 = time.perf_counter()
        try:
            result = train(model, train_part, tc, progress=False)
        except TrainingDivergedError as e:
            return {"diverged": str(e), "seconds": {"train": time.perf_counter() - t0}}
        t_train = time.perf_counter() - t0
        vec: SteeringVector = result.vectors[train_part.name]
        save_vector(vec, tmp / f"vector_{concept}")
        steps = result.logs[train_part.name]
        last = [s["loss"] for s in steps if s["epoch"] == steps[-1]["epoch"]]
        held = float(
            response_loss(
                model, held_out, vec, layer=tc.layer, max_response_tokens=tc.max_response_tokens
            ).mean()
        )
        return {
            "diverged": None,
            "train_loss_first": steps[0]["loss"],
            "train_loss_final": sum(last) / len(last),
            "heldout_loss": held,
            "alpha": float(vec.alpha),
            "v_norm": float(vec.v.detach().norm()),
            "steps": result.steps,
            "seconds": {"train": t_train, "heldout": time.perf_counter() - t0 - t_train},
        }

    def _eval(
        self,
        model: LoadedModel,
        judge: Judge,
        concept: int | str,
        unit: WorkUnit,
        trained: UnitOutput,
        log: ResultLog,
    ) -> dict:
        done = trained.result["concepts"][str(concept)]
        if done["diverged"]:
            return {"diverged": done["diverged"]}
        _, train_part, _ = self._parts(concept)
        with tempfile.TemporaryDirectory(prefix="prosv-vector-") as tmp:
            for name, blob in trained.files.items():
                if name.startswith(f"vector_{concept}."):
                    (Path(tmp) / name).write_bytes(blob)
            vec = load_vector(Path(tmp) / f"vector_{concept}", model)
        key = unit.settings["key"]
        tasks, eval_cfg = self._eval_setup()
        t0 = time.perf_counter()
        rows = evaluate_steering(
            model,
            train_part.name,
            [Method.vector(key, vec)],
            tasks,
            judge,
            log,
            eval_cfg,
            split=False,
        )
        return {
            "diverged": None,
            **_scores(rows, key),
            "seconds": {"eval": time.perf_counter() - t0},
        }


@dataclass
class SweepRun:
    """A finished (or partly finished) sweep invocation.

    Attributes:
        sweeps: the :class:`SweepResult` (``sweep.json``) per concept folder (``""``: the sweep
            folder itself).
        summary: the units done, run now, failed and skipped, and the time they took.
    """

    sweeps: dict[str, SweepResult]
    summary: RunSummary


def run_heatmap(
    model: LoadedModel, cfg: HeatmapConfig, out_dir: str | Path, judge: Judge
) -> SweepResult:
    """Run (or resume) the beta x lr_alpha sweep; returns its ``sweep.json``."""
    return run_sweep(model, cfg, out_dir, judge)


def run_position_sweep(
    model: LoadedModel, cfg: PositionSweepConfig, out_dir: str | Path, judge: Judge
) -> SweepResult:
    """Run (or resume) the position-spec sweep; returns its ``sweep.json``."""
    return run_sweep(model, cfg, out_dir, judge)


def run_sweep(
    model: LoadedModel, cfg: SweepConfig, out_dir: str | Path, judge: Judge
) -> SweepResult:
    """Train, measure and judge every cell of a one-concept sweep not yet done, in this process.

    Args:
        model: the model to steer (weights never modified).
        cfg: a :class:`HeatmapConfig` or :class:`PositionSweepConfig` over one concept.
        out_dir: the sweep folder (created if missing; see :func:`execute_sweep`).
        judge: rates the answers (e.g. ``OfflineJudge(reference=model)``).

    Returns:
        The :class:`SweepResult` saved as ``sweep.json``: ``kind``, ``config``, ``model``,
        ``judge``, ``concept``, ``baseline`` (the unsteered held-out loss and score) and
        ``cells`` (in config order).

    Raises:
        SweepError: the config covers several concepts (use :func:`execute_sweep`), or a unit
            failed (its error is named; the completed units are kept).
        RunMismatchError, OutputError: as :func:`execute_sweep`.
    """
    _check(
        len(sweep_concepts(cfg)) == 1,
        "this sweep covers several concepts: run it with "
        "execute_sweep(SweepJob(cfg, ...), out_dir), which returns one sweep per concept",
    )
    run = execute_sweep(SweepJob(cfg, model=model, judge=judge), out_dir, progress=False)
    if run.summary.failed:
        raise SweepError(run.summary.format())
    return run.sweeps[""]


def execute_sweep(
    job: SweepJob,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
) -> SweepRun:
    """Run (or resume) a sweep's units, then write each concept's ``sweep.json`` and ``rows.jsonl``.

    Args:
        job: the sweep (its config, and how workers load the model and judge).
        out_dir: the sweep folder: ``units/<id>/`` per completed unit, ``run.json`` (the config),
            ``inputs.json`` (model weights, data, judge, version), ``failed.json`` (units that
            failed this time), and the assembled ``sweep.json`` + ``rows.jsonl`` (in
            ``concept_<id>/`` per concept when the sweep covers several).
        workers: run on a local Ray instance with this many workers (needs ``prosv-lens[ray]``);
            ``None``: in this process, one unit after another.
        address: submit to an existing Ray cluster instead (``ray://HOST:PORT`` or ``HOST:PORT``).
        cpus_per_worker: CPU cores (and torch threads) per Ray worker.
        gpus_per_worker: GPUs per Ray worker (1: one worker per GPU; set ``device="cuda"``).
        progress: show a progress bar over units.

    Returns:
        The :class:`SweepRun`: the assembled sweeps (the cells done so far) and the summary.

    Raises:
        SweepError: ``out_dir`` holds a sweep of another config, or one written before work
            units (no ``units/`` folder).
        RunMismatchError: ``out_dir`` holds a sweep of another model, data, judge or version.
        OutputError: ``out_dir`` cannot be written, or another run is working in it.
        RayUnavailableError: ``workers``/``address`` given without Ray installed, or the cluster
            cannot be reached.
    """
    cfg = job.cfg
    out = check_writable(out_dir)
    with RunLock(out):
        _check_folder(out, cfg)

        def before(inputs: dict[str, Any]) -> None:
            check_fingerprint(out, inputs, name="inputs.json", other="a new out_dir")
            if not (out / RUN_FILE).exists():
                info = {
                    "config": cfg.to_dict(),
                    "model": inputs["model"]["model_id"],
                    "judge": inputs["judge"],
                }
                write_json(out / RUN_FILE, info)

        summary = execute_units(
            job,
            out,
            before=before,
            workers=workers,
            address=address,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            progress=progress,
        )
        sweeps = _assemble(job, out)
    return SweepRun(sweeps, summary)


def _check_folder(out: Path, cfg: SweepConfig) -> None:
    """Refuse a folder holding another config's sweep, or a sweep from before work units."""
    if (out / SWEEP_FILE).exists() and not (out / RUN_FILE).exists():
        raise SweepError(
            f"{out} holds a sweep written before work units (no {RUN_FILE}); its sweep.json is "
            "complete as it is: use a new out_dir to run again"
        )
    saved = read_json(out / RUN_FILE)
    if saved is None:
        return
    try:  # fields added since the sweep was saved take their defaults
        same = isinstance(saved, dict) and type(cfg).from_dict(saved["config"]) == cfg
    except (SweepError, KeyError, TypeError, ValueError):
        same = False
    _check(
        same,
        f"{out} holds a sweep of another config: use a new out_dir (or delete the "
        "folder to start over)",
    )


def _assemble(job: SweepJob, out: Path) -> dict[str, SweepResult]:
    """Each concept's ``sweep.json`` and ``rows.jsonl`` from the completed units, in config order
    (cells whose units are not done yet are left out)."""
    cfg, store = job.cfg, UnitStore(out)
    info = read_json(out / RUN_FILE)
    if info is None:  # no unit has run yet
        return {}
    units = job.units()
    outputs = {u.id: store.output(u) for u in units if store.is_done(u.id)}
    sweeps: dict[str, SweepResult] = {}
    for block in job.blocks():
        block_units = [u for u in units if u.settings["concepts"] == list(block)]
        baseline = outputs.get(block_units[0].id)
        for concept in block:
            c = str(concept)
            sweep: dict[str, Any] = {
                "kind": cfg.kind,
                "config": cfg.to_dict(),
                "model": info["model"],
                "judge": info["judge"],
                "concept": baseline.result["concepts"][c]["concept"] if baseline else str(concept),
                "layer": cfg.layer,
                "baseline": None,
                "cells": [],
            }
            rows: list[bytes] = []
            if baseline is not None:
                b = dict(baseline.result["concepts"][c])
                del b["concept"]
                sweep["baseline"] = b
                rows += _concept_rows(baseline, sweep["concept"])
            cells = [u for u in block_units if u.kind == "train"]
            for (key, tc, labels), trained in zip(cfg.cells(), cells, strict=True):
                evaluated = [u for u in block_units if u.after == (trained.id,)][0]
                if trained.id not in outputs or evaluated.id not in outputs:
                    continue
                t = outputs[trained.id].result["concepts"][c]
                e = outputs[evaluated.id].result["concepts"][c]
                seconds = {**t["seconds"], **e.get("seconds", {})}
                cell = {
                    **labels,
                    "key": key,
                    "train_config": tc.to_dict(),
                    **t,
                    **e,
                    "seconds": seconds,
                }
                sweep["cells"].append(cell)
                rows += _concept_rows(outputs[evaluated.id], sweep["concept"])
            folder = out / concept_folder(cfg, concept)
            result = SweepResult.from_dict(sweep, source=f"the units in {out}")
            saved = result.save(folder / SWEEP_FILE)
            write_text(folder / ROWS_FILE, b"".join(rows).decode())
            # as read back (the configs' tuples are JSON lists), so it equals a later load
            sweeps[concept_folder(cfg, concept)] = SweepResult.load(saved)
    return sweeps


def _concept_rows(output: UnitOutput, concept: str) -> list[bytes]:
    """The judged-answer lines of one concept in a unit's ``rows.jsonl``."""
    lines = output.files.get(ROWS_FILE, b"").splitlines(keepends=True)
    return [line for line in lines if json.loads(line)["concept"] == concept]


def _scores(rows: Sequence[dict], method: str) -> dict[str, Any]:
    (score,) = [s for s in summarize(rows) if s.method == method]
    d = score.to_dict()
    return {
        "scores": {k: d[k] for k in ("concept", "instruct", "fluency", "overall")},
        "n_answers": score.n_answers,
    }


def format_sweep(sweep: SweepResult) -> str:
    """One line for the unsteered baseline and one per finished cell of a ``sweep.json``."""
    base = sweep.baseline
    lines = []
    if base is not None:
        lines.append(
            f"unsteered: held-out loss {base.heldout_loss:.3f}, "
            f"overall {base.scores['overall'].mean:.3f}"
        )
    for c in sweep.cells:
        if c.diverged:
            lines.append(f"{c.key}: diverged ({c.diverged})")
            continue
        o, s = c.score(), c.seconds
        lines.append(
            f"{c.key}: train loss {c.train_loss_first:.3f} -> {c.train_loss_final:.3f}, "
            f"held-out {c.heldout_loss:.3f}, alpha {c.alpha:.1f}, overall {o.mean:.3f} "
            f"[{o.low:.3f}, {o.high:.3f}], concept {c.score('concept').mean:.3f}, "
            f"{s['train']:.0f} s train + {s['eval']:.0f} s eval"
        )
    return "\n".join(lines)
