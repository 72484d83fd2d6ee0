"""Before a reproduce run does any work: its config, sources, fingerprint and memory plan.

:class:`ReproduceConfig` says what to run; the functions here turn it into training configs, check
that the model and data can be had (without downloading anything for a dry run), select and hash
each concept's data, build the run's fingerprint and plan its memory and time.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from prosv_lens._version import __version__
from prosv_lens.concepts import (
    AxBenchTrainingSet,
    axbench_concepts,
    load_axbench_training_set,
    resolve_axbench,
)
from prosv_lens.errors import ExperimentError, RunMismatchError
from prosv_lens.evaluation.judges import Judge
from prosv_lens.experiments.plan import (
    DeviceInfo,
    Plan,
    Resources,
    epochs_of,
    plan_run,
    probe_device,
)
from prosv_lens.experiments.report import format_plan
from prosv_lens.experiments.run_folder import read_json, write_json
from prosv_lens.experiments.settings import RunSizes, Setting, get_setting
from prosv_lens.models import EMBEDDED_MODELS, TINY_MODEL
from prosv_lens.training import TrainConfig

KIND = "prosv-lens/reproduce"
FORMAT_VERSION = 1
JUDGE_REFERENCE = "smollm2-135m-instruct"  # the one model with fitted fluency thresholds
KINDS = ("prosv", "fssv")


@dataclass(frozen=True)
class ReproduceConfig:
    """What to run: a setting, which of its concepts, where, and any overrides.

    Attributes:
        setting: the registered setting (or one built in code, e.g. for tests).
        out_dir: the run folder (``None``: ``results/reproduce/<setting name>``).
        concept_ids: AxBench concept ids (``None``: the first ``sizes.n_concepts``).
        axbench: another data source than the setting's (a folder or ``hf:<dataset>/<sub>``).
        model: another model than the setting's (a local checkpoint folder, ``tiny``, ...).
        device: ``cpu``, ``cuda``, ... (``None``: CUDA if present).
        sizes: the sizes (default: the setting's, i.e. the paper's).
        resources: memory knobs (micro-batch rows, logits and residual-cache budgets).
        judge: ``offline`` (MiniLM + SmolLM2 fluency, no network) or ``llm`` (OpenAI-compatible).
    """

    setting: Setting = field(metadata={"help": "the registered setting"})
    out_dir: str | None = field(
        default=None,
        metadata={
            "help": "run folder; rerun the same command to resume",
            "default_help": "results/reproduce/SETTING",
        },
    )
    concept_ids: tuple[int, ...] | None = field(
        default=None, metadata={"help": "AxBench concept ids"}
    )
    axbench: str | None = field(
        default=None,
        metadata={
            "help": "data source instead of the setting's: an AxBench folder or "
            "hf:pyvene/axbench-concept10/2b/l10-style id"
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "model instead of the setting's (e.g. a local checkpoint folder of the "
            "same model)"
        },
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, ...", "default_help": "cuda if present"}
    )
    sizes: RunSizes | None = field(
        default=None, metadata={"help": "the sizes", "default_help": "the setting's"}
    )
    resources: Resources = field(default_factory=Resources, metadata={"help": "memory knobs"})
    judge: str = field(
        default="offline",
        metadata={
            "choices": ("offline", "llm"),
            "help": "offline (MiniLM + SmolLM2 fluency) or llm (OPENAI_API_KEY, "
            "PROSV_JUDGE_BASE_URL, PROSV_JUDGE_MODEL)",
        },
    )

    def __post_init__(self) -> None:
        if self.judge not in ("offline", "llm"):
            raise ExperimentError(f"judge must be 'offline' or 'llm', got {self.judge!r}")

    @property
    def run_sizes(self) -> RunSizes:
        return self.sizes or self.setting.sizes

    @property
    def out(self) -> Path:
        return Path(self.out_dir or Path("results") / "reproduce" / self.setting.name)

    @property
    def model_name(self) -> str:
        return self.model or self.setting.model


def make_config(setting: str | Setting, **changes: Any) -> ReproduceConfig:
    """A :class:`ReproduceConfig` for a setting name (unknown names raise at once)."""
    s = get_setting(setting) if isinstance(setting, str) else setting
    return ReproduceConfig(s, **changes)


def train_config(cfg: ReproduceConfig, kind: str) -> TrainConfig:
    """The PrOSV or FSSV preset with the setting's overrides and the run's sizes."""
    sizes, setting = cfg.run_sizes, cfg.setting
    preset = TrainConfig.prosv if kind == "prosv" else TrainConfig.fssv
    overrides = {
        **dict(getattr(setting, kind)),
        "epochs": epochs_of(setting, sizes, kind),
        "batch_size": sizes.batch_size,
        "max_response_tokens": sizes.max_response_tokens,
    }
    if "logits_budget_mb" in {f.name for f in fields(TrainConfig)}:  # added to the trainer lately
        overrides["logits_budget_mb"] = cfg.resources.logits_budget_mb
    return preset(setting.layer, **overrides)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def model_source_problem(name: str) -> str | None:
    """Why ``name`` cannot be loaded here without a download (``None``: it can, as far as can be
    told without loading it)."""
    if name == TINY_MODEL or name in EMBEDDED_MODELS or Path(name).expanduser().is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    if _hub_offline():
        return (
            f"model {name} is not in the Hugging Face cache and the hub is disabled "
            "(HF_HUB_OFFLINE=1): download it once with the hub reachable, or pass --model "
            "with a local checkpoint folder"
        )
    return None


def data_source_note(source: str) -> str:
    """Where the concepts would come from, for the dry run (nothing is downloaded)."""
    if not source.startswith("hf:"):
        return f"local folder {source}"
    from huggingface_hub import try_to_load_from_cache

    parts = source[3:].split("@")[0].split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    cached = try_to_load_from_cache(repo, f"{sub}/train/data.parquet", repo_type="dataset")
    if isinstance(cached, str):
        return f"{source} (in the Hugging Face cache)"
    state = "the hub is disabled (HF_HUB_OFFLINE=1)" if _hub_offline() else "needs the hub once"
    return f"{source}: not cached and {state}; a real run needs it, or --axbench DIR"


def run_dtype(cfg: ReproduceConfig) -> torch.dtype:
    return getattr(torch, cfg.setting.dtype)


def make_plan(
    cfg: ReproduceConfig, device: DeviceInfo | None = None, n_concepts: int | None = None
) -> Plan:
    """The memory/time plan of ``cfg`` on ``device`` (default: probe ``cfg.device``)."""
    device = device or probe_device(cfg.device, run_dtype(cfg))
    k = n_concepts or (len(cfg.concept_ids) if cfg.concept_ids else cfg.run_sizes.n_concepts)
    return plan_run(
        cfg.setting, cfg.run_sizes, device, cfg.resources, n_concepts=k, judge=cfg.judge
    )


def dry_run(cfg: ReproduceConfig, device: DeviceInfo | None = None) -> tuple[str, Plan]:
    """The plan and its text, with the model and data availability; loads and downloads
    nothing. :meth:`Plan.check` on the returned plan refuses a run that does not fit."""
    plan = make_plan(cfg, device)
    notes = [
        model_source_problem(cfg.model_name) or f"model {cfg.model_name} is available here",
        f"data: {data_source_note(cfg.axbench or cfg.setting.data_source())}",
    ]
    return format_plan(plan, notes), plan


def select_concepts(cfg: ReproduceConfig, source: str) -> list[AxBenchTrainingSet]:
    folder = resolve_axbench(source)
    known = [m["concept_id"] for m in axbench_concepts(folder)]
    ids = (
        list(dict.fromkeys(cfg.concept_ids))
        if cfg.concept_ids
        else known[: cfg.run_sizes.n_concepts]
    )
    missing = [i for i in ids if i not in known]
    if missing:
        raise ExperimentError(f"concept ids {missing} are not in {source} (it has {known})")
    n = cfg.run_sizes.n_train
    out = []
    for cid in ids:
        ts = load_axbench_training_set(folder, cid)
        keep = range(min(n, len(ts.positives))), range(min(n, len(ts.negatives)))
        out.append(
            replace(
                ts, positives=ts.positives.subset(keep[0]), negatives=ts.negatives.subset(keep[1])
            )
        )
    return out


def data_hash(ts: AxBenchTrainingSet) -> str:
    """sha256 of exactly the data a concept is trained and baselined on."""
    blob = json.dumps(
        [
            ts.concept_id,
            ts.concept,
            ts.genre,
            [list(map(str, d.prompts)) + list(d.responses) for d in (ts.positives, ts.negatives)],
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def judge_name(cfg: ReproduceConfig, judge: Judge | None) -> str:
    if judge is not None:
        return judge.name
    if cfg.judge == "llm":
        from prosv_lens.evaluation.llm_judge import LLMJudge

        return LLMJudge().name
    return f"offline:fluency-reference={JUDGE_REFERENCE}"


def fingerprint(cfg: ReproduceConfig, source: str, judge: str, device_type: str) -> dict:
    """What a run's results depend on (memory knobs excluded: they change rounding only)."""
    trains = {
        k: {n: v for n, v in train_config(cfg, k).to_dict().items() if n != "logits_budget_mb"}
        for k in KINDS
    }
    sizes = {k: v for k, v in cfg.run_sizes.to_dict().items() if k != "n_concepts"}
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "setting": cfg.setting.name,
        "model": cfg.model_name,
        "dtype": cfg.setting.dtype,
        "layer": cfg.setting.layer,
        "data_source": source if source.startswith("hf:") else f"folder:{Path(source).name}",
        "sizes": sizes,
        "train": trains,
        "diffmean_factors": list(cfg.setting.diffmean_factors),
        "judge": judge,
        "device": device_type,
        "package_version": __version__,
    }


def concept_dir(out: Path, ts: AxBenchTrainingSet) -> Path:
    return out / "concepts" / f"{ts.concept_id:04d}"


def claim_concepts(out: Path, sets: Sequence[AxBenchTrainingSet]) -> None:
    for ts in sets:
        path = concept_dir(out, ts) / "concept.json"
        record: dict[str, Any] = {
            "concept_id": ts.concept_id,
            "concept": ts.concept,
            "genre": ts.genre,
            "data_sha256": data_hash(ts),
            "n_positives": len(ts.positives),
            "n_negatives": len(ts.negatives),
        }
        stored = read_json(path)
        if stored is None:
            write_json(path, record)
        elif stored != record:
            raise RunMismatchError(
                f"{path.parent} holds results for other data of concept {ts.concept_id} "
                f"(data sha256 {str(stored.get('data_sha256'))[:12]} -> "
                f"{record['data_sha256'][:12]}): "
                "use another --out, or delete that folder to redo the concept"
            )
