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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin

from prosv_lens._version import __version__
from prosv_lens.builder import concept_data
from prosv_lens.concepts import builtin_instructions, load_axbench_concept
from prosv_lens.concepts.data import ConceptData
from prosv_lens.errors import ProsvError, RunMismatchError, SweepError, TrainingDivergedError  # noqa: F401 - re-exported
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
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import DTYPES, LoadedModel
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
)
from prosv_lens.training import TrainConfig, response_loss, train
from prosv_lens.training.checkpoint import data_hash, model_fingerprint
from prosv_lens.training.config import OPTIMIZERS

SWEEP_FILE = "sweep.json"
ROWS_FILE = "rows.jsonl"
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
    _check(cfg.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")  # fmt: skip
    _check((cfg.axbench is None) == (cfg.concept_id is None),
           "axbench and concept_id go together: set both to train on an AxBench concept, or "
           f"neither to use `concept` (got axbench={cfg.axbench!r}, concept_id={cfg.concept_id!r})")  # fmt: skip


def _from_dict(cls: "type[_SweepConfig]", data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known - {"kind"}
    _check(not unknown, f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
    _check(data.get("kind", cls.kind) == cls.kind,
           f"{cls.__name__} needs kind {cls.kind!r}, got {data.get('kind')!r}")  # fmt: skip
    kinds = {f.name: f.type for f in fields(cls)}
    values = {k: _from_json(v, kinds[k]) for k, v in data.items() if k != "kind"}
    for k, v in values.items():  # before the constructor, whose arguments may be type-checked
        _check_type(k, v, kinds[k])
    return cls(**values)


def _from_json(value: Any, kind: Any) -> Any:
    """``value`` as field type ``kind`` wants it: JSON gives lists for tuples, and ints where
    floats are meant; anything else is left for :func:`_check_type` to name."""
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
            _check(bool(values) and all(math.isfinite(x) and x > 0 for x in values),
                   f"{name} must be a non-empty list of finite values > 0, got {values!r}")  # fmt: skip
            _check(len(set(values)) == len(values), f"{name} has repeated values {values!r}")
        _check(bool(self.optimizers) and set(self.optimizers) <= set(OPTIMIZERS),
               f"optimizers must be a non-empty subset of {OPTIMIZERS}, got {self.optimizers!r}")  # fmt: skip

    def cells(self) -> list[tuple[str, TrainConfig, dict[str, Any]]]:
        """``(key, train config, labels)`` per cell, optimizer-major then beta then lr_alpha."""
        return [
            (f"{opt} beta={b:g} lr_alpha={lr:g}",
             TrainConfig.prosv(self.layer, positions=self.positions, beta=float(b),
                               lr_alpha=float(lr), optimizer=opt, epochs=self.epochs,
                               batch_size=self.batch_size, seed=self.seed),
             {"optimizer": opt, "beta": float(b), "lr_alpha": float(lr)})
            for opt in self.optimizers for b in self.betas for lr in self.lr_alphas
        ]  # fmt: skip


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
            (spec, make(self.layer, positions=spec, epochs=self.epochs,
                        batch_size=self.batch_size, seed=self.seed), {"positions": spec})
            for spec in self.specs
        ]  # fmt: skip


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
    _check(isinstance(data, dict) and data.get("kind") in CONFIG_KINDS,
           f"{path}: a sweep config needs \"kind\" set to one of {sorted(CONFIG_KINDS)}")  # fmt: skip
    return CONFIG_KINDS[data["kind"]].from_dict(data)


def run_heatmap(model: LoadedModel, cfg: HeatmapConfig, out_dir: str | Path, judge: Judge) -> dict:
    """Run (or resume) the beta x lr_alpha sweep; returns the ``sweep.json`` content."""
    return run_sweep(model, cfg, out_dir, judge)


def run_position_sweep(
    model: LoadedModel, cfg: PositionSweepConfig, out_dir: str | Path, judge: Judge
) -> dict:
    """Run (or resume) the position-spec sweep; returns the ``sweep.json`` content."""
    return run_sweep(model, cfg, out_dir, judge)


def run_sweep(model: LoadedModel, cfg: SweepConfig, out_dir: str | Path, judge: Judge) -> dict:
    """Train, measure and judge every cell of ``cfg`` not yet in ``out_dir/sweep.json``.

    Args:
        model: the model to steer (weights never modified).
        cfg: a :class:`HeatmapConfig` or :class:`PositionSweepConfig`.
        out_dir: where ``sweep.json`` and ``rows.jsonl`` go (created if missing).
        judge: rates the answers (e.g. ``OfflineJudge(reference=model)``).

    Returns:
        The ``sweep.json`` content: ``kind``, ``config``, ``model``, ``judge``, ``concept``,
        ``baseline`` (the unsteered held-out loss and score) and ``cells`` (in config order).

    Raises:
        SweepError: ``out_dir`` holds a sweep of another config or judge, or the concept has
            too few examples for ``n_train`` plus a held-out part.
        RunMismatchError: ``out_dir`` holds a sweep of another model (weights, dtype), other
            data or another package version (``inputs.json``), or one that recorded none.
        OutputError: ``out_dir`` cannot be written, or another run is working in it.
    """
    out = check_writable(out_dir)
    with RunLock(out):
        return _run_sweep(model, cfg, out, judge)


def _run_sweep(model: LoadedModel, cfg: SweepConfig, out: Path, judge: Judge) -> dict:
    data = sweep_data(model, cfg)
    inputs = {
        "model": model_fingerprint(model),
        "data": data_hash(data),
        "package_version": __version__,
    }
    if (out / SWEEP_FILE).exists() and not (out / "inputs.json").exists():
        raise RunMismatchError(
            f"{out} holds a sweep that recorded no inputs (model weights, data; written by an "
            "older prosv-lens): use a new out_dir, or delete the folder to start over"
        )
    check_fingerprint(out, inputs, name="inputs.json", other="a new out_dir")
    _check(cfg.n_train < len(data), f"concept {data.name!r} has {len(data)} examples: "
           f"n_train={cfg.n_train} leaves none held out; lower n_train")  # fmt: skip
    train_part, held_out = data.split(cfg.n_train)
    if cfg.n_heldout is not None:
        held_out = held_out.subset(range(min(cfg.n_heldout, len(held_out))))
    instructions = builtin_instructions("eval")
    _check(cfg.n_eval <= len(instructions), f"n_eval={cfg.n_eval} > {len(instructions)} eval instructions")  # fmt: skip
    tasks = tasks_from(instructions[: cfg.n_eval])
    log = ResultLog(out / ROWS_FILE, KEY_FIELDS)
    eval_cfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.n_eval, seed=cfg.seed)
    sweep = _load_or_start(out / SWEEP_FILE, cfg, model, judge, data.name)
    if sweep["baseline"] is None:
        rows = evaluate_steering(model, data.name, [Method.unsteered()], tasks, judge, log, eval_cfg,
                                 split=False)  # fmt: skip
        loss = response_loss(model, held_out, None, layer=cfg.layer)
        sweep["baseline"] = {"heldout_loss": float(loss.mean()), **_scores(rows, "unsteered")}
        _write(out / SWEEP_FILE, sweep)
    done = {c["key"] for c in sweep["cells"]}
    for key, tc, labels in cfg.cells():
        if key in done:
            continue
        cell = _run_cell(model, key, tc, train_part, held_out, tasks, judge, log, eval_cfg)
        sweep["cells"].append({**labels, **cell})
        _write(out / SWEEP_FILE, sweep)
    return sweep


def sweep_data(model: LoadedModel, cfg: SweepConfig) -> ConceptData:
    """The sweep's concept data: the AxBench concept's positives, or ``cfg.concept``'s data."""
    if cfg.axbench is not None:
        assert cfg.concept_id is not None  # set together with axbench (_common_checks)
        return load_axbench_concept(cfg.axbench, cfg.concept_id)
    return concept_data(model, cfg.concept)


def _load_or_start(
    path: Path, cfg: SweepConfig, model: LoadedModel, judge: Judge, concept: str
) -> dict:
    if path.exists():
        sweep = read_json(path)  # a corrupt file: ResultFileError naming it
        if not isinstance(sweep, dict):
            raise SweepError(f"{path} is not a sweep (a JSON object): use a new out_dir")
        saved = sweep.get("config")
        try:  # fields added since the sweep was saved take their defaults
            same = isinstance(saved, dict) and type(cfg).from_dict(saved) == cfg
        except (SweepError, TypeError, ValueError):
            same = False
        _check(same and sweep.get("judge") == judge.name
               and sweep.get("model") == model.model_id,
               f"{path} holds a sweep of another config, model or judge: use a new out_dir "
               "(or delete the folder to start over)")  # fmt: skip
        return sweep
    return {
        "kind": cfg.kind, "config": cfg.to_dict(), "model": model.model_id, "judge": judge.name,
        "concept": concept, "layer": cfg.layer, "baseline": None, "cells": [],
    }  # fmt: skip


def _run_cell(
    model: LoadedModel,
    key: str,
    tc: TrainConfig,
    train_part: ConceptData,
    held_out: ConceptData,
    tasks: Sequence,
    judge: Judge,
    log: ResultLog,
    eval_cfg: EvalConfig,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    base = {"key": key, "train_config": tc.to_dict()}
    try:
        result = train(model, train_part, tc, progress=False)
    except TrainingDivergedError as e:
        return {**base, "diverged": str(e), "seconds": {"train": time.perf_counter() - t0}}
    t_train = time.perf_counter() - t0
    vec: SteeringVector = result.vectors[train_part.name]
    steps = result.logs[train_part.name]
    last = [s["loss"] for s in steps if s["epoch"] == steps[-1]["epoch"]]
    held = float(response_loss(model, held_out, vec, layer=tc.layer,
                               max_response_tokens=tc.max_response_tokens).mean())  # fmt: skip
    t1 = time.perf_counter()
    rows = evaluate_steering(model, train_part.name, [Method.vector(key, vec)], tasks, judge, log,
                             eval_cfg, split=False)  # fmt: skip
    return {
        **base, "diverged": None, "train_loss_first": steps[0]["loss"],
        "train_loss_final": sum(last) / len(last), "heldout_loss": held,
        "alpha": float(vec.alpha), "v_norm": float(vec.v.detach().norm()), "steps": result.steps,
        **_scores(rows, key),
        "seconds": {"train": t_train, "heldout": t1 - t0 - t_train, "eval": time.perf_counter() - t1},
    }  # fmt: skip


def _scores(rows: Sequence[dict], method: str) -> dict[str, Any]:
    (score,) = [s for s in summarize(rows) if s.method == method]
    d = score.to_dict()
    return {"scores": {k: d[k] for k in ("concept", "instruct", "fluency", "overall")},
            "n_answers": score.n_answers}  # fmt: skip


def _write(path: Path, sweep: dict) -> None:
    write_json(path, sweep)


def format_sweep(sweep: dict) -> str:
    """One line for the unsteered baseline and one per finished cell of a ``sweep.json``."""
    base = sweep["baseline"]
    lines = []
    if base is not None:
        lines.append(f"unsteered: held-out loss {base['heldout_loss']:.3f}, "
                     f"overall {base['scores']['overall']['mean']:.3f}")  # fmt: skip
    for c in sweep["cells"]:
        if c["diverged"]:
            lines.append(f"{c['key']}: diverged ({c['diverged']})")
            continue
        o, s = c["scores"]["overall"], c["seconds"]
        lines.append(
            f"{c['key']}: train loss {c['train_loss_first']:.3f} -> {c['train_loss_final']:.3f}, "
            f"held-out {c['heldout_loss']:.3f}, alpha {c['alpha']:.1f}, overall {o['mean']:.3f} "
            f"[{o['low']:.3f}, {o['high']:.3f}], concept {c['scores']['concept']['mean']:.3f}, "
            f"{s['train']:.0f} s train + {s['eval']:.0f} s eval"
        )  # fmt: skip
    return "\n".join(lines)
