"""The main job at this stage: steer the embedded model and show generations side by side.

It builds a DiffMean direction for a concept from two small built-in sets of sentences, makes a
prompt-only vector (``f2+l2``) and a full-sequence vector (``all``) from it, checks that cached and
uncached steered decoding agree, generates for a few instructions unsteered / PrOSV / FSSV, and
writes a markdown report plus the two vectors into a run folder.

The factors are fixed multiples of the median residual norm at the layer, chosen by hand on
SmolLM2 (an untrained direction needs a factor search — the problem the paper's joint training
removes; trained vectors arrive with the trainer).
"""

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from prosv_lens.directions import mean_difference
from prosv_lens.generation import GenerationConfig, check_cache_equivalence, generate
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import DEFAULT_MODEL, load_model
from prosv_lens.prompts import encode_prompts
from prosv_lens.vector_io import save_vector

OCEAN_POSITIVE = (
    "The ocean waves crashed against the rocky shore.",
    "Dolphins and whales swim in the deep blue sea.",
    "Sailors navigated the stormy ocean for weeks.",
    "The tide brought seashells and seaweed onto the beach.",
    "Coral reefs teem with colorful fish beneath the waves.",
    "Salt spray rose from the sea as the ship sailed on.",
)
OCEAN_NEGATIVE = (
    "The meeting was moved to Tuesday afternoon.",
    "She bought bread and milk at the store.",
    "The software update fixed several bugs.",
    "He studied for the history exam all night.",
    "The train arrived at the station on time.",
    "They painted the living room a light gray.",
)
DEMO_INSTRUCTIONS = (
    "Give me three tips for staying focused while studying.",
    "What is the capital of France?",
    "Describe your ideal weekend.",
)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``prosv demo`` (defaults: SmolLM2, layer at 40% depth, 48 greedy tokens)."""

    model: str = DEFAULT_MODEL
    layer: int | None = None  # None: round(0.4 * n_layers), the paper's relative depth
    prosv_factor: float = 10.0  # alpha in units of the median residual norm at the layer
    fssv_factor: float = 0.3
    max_new_tokens: int = 48
    instructions: tuple[str, ...] = DEMO_INSTRUCTIONS
    positive: tuple[str, ...] = OCEAN_POSITIVE
    negative: tuple[str, ...] = OCEAN_NEGATIVE
    concept: str = "the ocean"
    out_dir: str = "runs"


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo; returns the run folder holding ``report.md``, ``results.json`` and vectors."""
    t0 = time.perf_counter()
    steps = tqdm(total=5, desc="prosv demo", unit="step")
    model = load_model(cfg.model)
    steps.update()
    layer = cfg.layer if cfg.layer is not None else round(0.4 * model.n_layers)
    md = mean_difference(model, cfg.positive, cfg.negative, layer)
    common = {
        "layer": layer,
        "model_id": model.model_id,
        "chat_template_hash": model.chat_template_hash,
    }
    info = {"method": "diffmean", "concept": cfg.concept, "resid_norm": md.resid_norm}
    vectors = {
        "PrOSV f2+l2": SteeringVector(
            md.direction, positions="f2+l2", alpha=cfg.prosv_factor * md.resid_norm,
            info={**info, "factor_x_resid_norm": cfg.prosv_factor}, **common,
        ),
        "FSSV all": SteeringVector(
            md.direction, positions="all", alpha=cfg.fssv_factor * md.resid_norm,
            info={**info, "factor_x_resid_norm": cfg.fssv_factor}, **common,
        ),
    }  # fmt: skip
    steps.update()
    batch = encode_prompts(model, list(cfg.instructions))
    checks = {
        name: check_cache_equivalence(model, batch, sv, max_new_tokens=4)
        for name, sv in vectors.items()
    }
    steps.update()
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens)
    outputs = {"unsteered": generate(model, batch, (), gen_cfg).texts}
    for name, sv in vectors.items():
        outputs[name] = generate(model, batch, sv, gen_cfg).texts
    steps.update()
    run = Path(cfg.out_dir) / time.strftime("demo-%Y%m%d-%H%M%S")
    run.mkdir(parents=True, exist_ok=True)
    for name, sv in vectors.items():
        save_vector(sv, run / name.split()[0].lower())
    elapsed = time.perf_counter() - t0
    results = {
        "config": asdict(cfg), "model": model.model_id, "layer": layer, "resid_norm": md.resid_norm,
        "alphas": {n: float(sv.alpha) for n, sv in vectors.items()},
        "cache_check": {n: asdict(c) for n, c in checks.items()},
        "outputs": outputs, "seconds": elapsed,
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results, indent=2))
    (run / "report.md").write_text(render_report(results, cfg.instructions))
    steps.update()
    steps.close()
    return run


def _cell(text: str) -> str:
    return text.strip().replace("|", "\\|").replace("\n", " ⏎ ")


def render_report(results: dict, instructions: Sequence[str]) -> str:
    """Markdown: settings, the cache check, and one row per instruction, one column per run."""
    names = list(results["outputs"])
    lines = [
        f"# prosv demo — {results['model']}, layer {results['layer']}",
        "",
        f"Concept: **{results['config']['concept']}** (DiffMean direction from "
        f"{len(results['config']['positive'])}+{len(results['config']['negative'])} sentences). "
        f"Median residual norm at the layer: {results['resid_norm']:.1f}.",
        "",
        "| vector | alpha | KV-cache check (max abs logit diff, greedy tokens equal) |",
        "|---|---|---|",
    ]
    for n, a in results["alphas"].items():
        c = results["cache_check"][n]
        lines.append(f"| {n} | {a:.1f} | {c['max_abs_diff']:.2e}, {c['tokens_equal']} |")
    lines += ["", "| instruction | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, inst in enumerate(instructions):
        row = [_cell(inst)] + [_cell(results["outputs"][n][i]) for n in names]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Wall time: {results['seconds']:.1f} s.", ""]
    return "\n".join(lines)
