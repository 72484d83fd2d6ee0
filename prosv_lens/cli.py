"""The ``prosv`` command line: a thin client of the library.

Examples::

    prosv demo                                   # steer SmolLM2, unsteered vs PrOSV vs FSSV
    prosv positions "Name three colors." --spec f2+l2
    prosv generate "Describe your ideal weekend." --vector runs/demo-*/prosv
    prosv check-cache --spec f2+l2 --layer 12
    prosv inspect runs/demo-*/prosv
    prosv sweep configs/heatmap_small.json       # -> results/heatmap_small, figures/
    prosv report                                 # -> reports/paper_claims.md
    prosv models --convert gemma-3-270m
    prosv reproduce gemma-2-2b-l10 --dry-run     # memory/time plan, nothing loaded
    prosv reproduce smollm2-l12 --concepts 2     # -> results/reproduce/smollm2-l12
"""

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from prosv_lens._version import __version__
from prosv_lens.cli_options import (
    add_options,
    field_help,
    finite_float,
    non_negative_float,
    non_negative_int,
    option_values,
    positive_float,
    positive_int,
)
from prosv_lens.errors import ConfigError, ProsvError
from prosv_lens.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from prosv_lens.experiments.claims import ResultFolders

    _Sub = argparse._SubParsersAction["_Parser"]


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _progress(line: str) -> None:
    """A long run's progress line, on stderr (stdout carries the results)."""
    sys.stderr.write(line + "\n")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit status 2:
    ``prosv train: error: argument --epochs: invalid int value: 'x' (see prosv train --help)``.

    Subparsers are made with the same class (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        one_line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"{DEFAULT_MODEL} (default), gemma-3-270m, tiny, a folder or a hub id",
    )
    _device_arg(p)
    p.add_argument(
        "--dtype",
        default="float32",
        help="weight dtype: float32 (default), bfloat16 (the usual choice on a GPU; training "
        "keeps alpha, v and Adam's state in float32), float16, float64",
    )


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cmd_demo(args: argparse.Namespace) -> int:
    from prosv_lens.experiments.demo import DemoConfig, run_demo

    run = run_demo(DemoConfig(**option_values(args, _DEMO_OPTIONS)))
    _out((run / "report.md").read_text())
    _out(f"run folder: {run}")
    return 0


def _cmd_judge_validate(args: argparse.Namespace) -> int:
    from prosv_lens.concepts import axbench_concepts
    from prosv_lens.evaluation.judge_validation import format_validation, validate_offline_judge
    from prosv_lens.evaluation.offline_judge import OfflineJudge
    from prosv_lens.safe_io import check_output_path, write_text

    if args.json:
        check_output_path(args.json, flag="--json")
    for folder in args.axbench:  # every folder's concept list is read before the judge runs
        axbench_concepts(folder)
    judge = OfflineJudge()  # one judge: embeddings are computed once across folders
    results = [validate_offline_judge(folder, judge) for folder in args.axbench]
    _out(format_validation(results))
    if args.json:
        write_text(args.json, json.dumps([r.to_dict() for r in results], indent=2))
    return 0


def _cmd_analyse(args: argparse.Namespace) -> int:
    from prosv_lens.concepts import builtin_instructions
    from prosv_lens.experiments.analysis import run_attention_analysis
    from prosv_lens.figures import regenerate_figures
    from prosv_lens.models import load_model
    from prosv_lens.safe_io import check_output_path
    from prosv_lens.vector_io import load_vector

    check_output_path(args.out, folder=True)
    if args.figures:
        check_output_path(args.figures, flag="--figures", folder=True)
    pairs = [_name_and_path(item) for item in args.compare or []]
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    vector = load_vector(args.vector, model)
    compare = {name: load_vector(path, model) for name, path in pairs}
    prompts = args.prompts or list(builtin_instructions("eval")[: args.n_prompts])
    index = run_attention_analysis(
        model,
        vector,
        prompts,
        args.out,
        max_new_tokens=args.max_new_tokens,
        what=args.what,
        compare=compare or None,
        top_layers=args.top_layers,
        log=_out,
        overwrite=args.force,
    )
    _out(f"results: {args.out} ({index['seconds']} s)")
    if args.figures:
        for path in regenerate_figures(args.out, args.figures):
            _out(str(path))
    return 0


def _name_and_path(item: str) -> tuple[str, str]:
    """``NAME=PATH`` of ``--compare`` split in two."""
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--compare takes NAME=PATH (e.g. fssv=runs/x/fssv), got {item!r}")
    return name, path


def _cmd_figures(args: argparse.Namespace) -> int:
    from prosv_lens.figures import regenerate_figures
    from prosv_lens.safe_io import check_output_path

    check_output_path(args.out, folder=True)
    for path in regenerate_figures(args.results, args.out):
        _out(str(path))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import os
    import time

    from prosv_lens.experiments.sweeps import (
        SweepJob,
        execute_sweep,
        format_sweep,
        load_sweep_config,
        offline_judge,
    )
    from prosv_lens.figures.regenerate import sweep_figures
    from prosv_lens.models import load_model
    from prosv_lens.safe_io import check_output_path

    cfg = load_sweep_config(args.config)  # a bad config fails before the model loads
    out = check_output_path(args.out or Path("results") / Path(args.config).stem, folder=True)
    check_output_path(args.figures, flag="--figures", folder=True)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.perf_counter()
    if args.workers is None and address is None:  # in this process, as before Ray existed
        model = load_model(cfg.model, device=args.device, dtype=cfg.dtype)
        model.hook_name(cfg.layer)  # a layer the model lacks fails before the folder is made
        job = SweepJob(cfg, model=model, judge=offline_judge(model))
    else:
        from prosv_lens.experiments.ray_executor import check_address, import_ray

        import_ray()  # no Ray: one line saying how to install it, before any work
        if address is not None and address != "auto":
            check_address(address)
        job = SweepJob(cfg, device=args.device)
    run = execute_sweep(
        job,
        out,
        workers=args.workers,
        address=address,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    for folder, sweep in run.sweeps.items():
        if len(run.sweeps) > 1:
            _out(f"-- {folder}: {sweep.concept}")
        _out(format_sweep(sweep))
        if len(run.sweeps) == 1:
            for path in sweep_figures(sweep, Path(args.figures), out.name + "_"):
                _out(f"wrote {path}")
    _out(run.summary.format())
    _out(f"results: {out} (this invocation {time.perf_counter() - t0:.0f} s)")
    return 1 if run.summary.failed else 0


def report_folders() -> "ResultFolders":
    """This repository's results layout for ``prosv report``: the sub-folder of ``--results``
    each experiment writes, and the command that makes it."""
    from prosv_lens.experiments.claims import ResultFolders

    heatmaps = {"heatmap_axbench": "AxBench concept", "heatmap_medium": "built-in concept"}
    positions = {"positions_axbench": "AxBench concept"}
    axbench = "../shared/data/axbench-concept10/prod_2b_l10_v1"
    commands = {
        "demo_ocean": "prosv demo --out runs  (then copy results.json and rows.jsonl to "
        "results/demo_ocean/)",
        "attention_ocean": "see results/attention_ocean/README.md",
        "axbench_l10": f"prosv axbench-eval --axbench {axbench} --concepts 5 --out "
        "results/axbench_l10",
        **{f: f"prosv sweep configs/{f}.json" for f in (*heatmaps, *positions)},
    }
    return ResultFolders(
        demo="demo_ocean",
        attention="attention_ocean",
        axbench="axbench_l10",
        heatmaps=heatmaps,
        positions=positions,
        commands=commands,
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from prosv_lens.experiments.claims import build_report, collect_claims, summary_table
    from prosv_lens.safe_io import check_output_path, write_text

    out = check_output_path(args.out)
    folders = report_folders()
    claims = collect_claims(args.results, folders)
    write_text(out, build_report(args.results, folders, claims))
    _out("\n".join(summary_table(claims)) + f"\n\nwrote {out}")
    return 0


def _cmd_axbench_eval(args: argparse.Namespace) -> int:
    from prosv_lens.evaluation.steering_eval import format_scores
    from prosv_lens.experiments.axbench_eval import AxBenchEvalConfig, run_axbench_eval

    cfg = AxBenchEvalConfig(**option_values(args, _AXBENCH_EVAL_OPTIONS))
    scores = run_axbench_eval(cfg, log=_progress)
    _out(format_scores(scores))
    _out(f"results: {cfg.out}")
    return 0


def _cmd_build_concept(args: argparse.Namespace) -> int:
    from prosv_lens.builder import build_concept_data
    from prosv_lens.models import load_model

    blank = [c for c in args.concepts if not c.strip()]
    if blank:
        raise ConfigError(
            f"a concept name is blank ({blank[0]!r}): name each concept, e.g. 'the ocean'"
        )
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    for concept in args.concepts:
        data = build_concept_data(model, concept)
        _out(f"{concept}: {len(data)} examples")
        for p, r in list(zip(data.prompts, data.responses, strict=True))[: args.show]:
            _out(f"  Q: {p}\n  A: {r[:300]}")
    return 0


def _cmd_positions(args: argparse.Namespace) -> int:
    from prosv_lens.models import load_model
    from prosv_lens.positions import PositionSpec
    from prosv_lens.prompts import encode_prompts

    specs = [PositionSpec.parse(text) for text in args.spec]  # every spec before any output
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    batch = encode_prompts(model, args.prompts, system=args.system)
    masks = [spec.resolve(batch).mask for spec in specs]
    for spec, mask in zip(specs, masks, strict=True):
        _out(
            f"spec {spec}  ({'prompt-only' if spec.is_prompt_only else 'also every generated token'})"
        )
        for b in range(batch.batch_size):
            cols = mask[b].nonzero().flatten().tolist()
            first = int(batch.attention_mask[b].nonzero()[0])
            toks = model.tokenizer.convert_ids_to_tokens(batch.input_ids[b, cols].tolist())
            shown = ", ".join(f"{c - first}:{t!r}" for c, t in zip(cols, toks, strict=True))
            _out(f"  [{b}] {shown}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from prosv_lens.generation import GenerationConfig, generate
    from prosv_lens.models import load_model
    from prosv_lens.vector_io import load_vector

    if not args.temperature >= 0:  # NaN fails too
        raise ConfigError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    vectors = []
    for path in args.vector or []:
        v = load_vector(path, model, allow_model_mismatch=args.allow_model_mismatch)
        if args.positions:
            v = v.replace(positions=args.positions)
        if args.scale != 1.0:
            v = v.scaled(args.scale)
        vectors.append(v)
    cfg = GenerationConfig(
        **option_values(args, _GENERATE_OPTIONS),
        do_sample=args.temperature > 0,
        temperature=args.temperature if args.temperature > 0 else 1.0,
        progress=True,
    )
    out = generate(model, args.prompts, vectors, cfg)
    for prompt, text in zip(args.prompts, out.texts, strict=True):
        _out(f"### {prompt}\n{text}\n")
    return 0


def _cmd_check_cache(args: argparse.Namespace) -> int:
    import torch

    from prosv_lens.generation import check_cache_equivalence
    from prosv_lens.interventions import SteeringVector
    from prosv_lens.models import default_layer, load_model
    from prosv_lens.positions import PositionSpec
    from prosv_lens.prompts import encode_prompts

    for spec in args.spec:  # every input is checked before the first line of output
        PositionSpec.parse(spec)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    layer = args.layer if args.layer is not None else default_layer(model.n_layers)
    model.hook_name(layer)
    batches = {
        side: encode_prompts(model, args.prompts, padding_side=side) for side in ("left", "right")
    }
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(model.d_model, generator=gen)
    failed = 0
    for side, batch in batches.items():
        floor = check_cache_equivalence(model, batch, (), max_new_tokens=args.max_new_tokens)
        _out(
            f"{side:5s} {'(no vector)':12s} max|diff| {floor.max_abs_diff:.2e}  (float noise floor)"
        )
        for spec in args.spec:
            sv = SteeringVector(v / v.norm(), layer=layer, positions=spec, alpha=args.alpha)
            r = check_cache_equivalence(model, batch, sv, max_new_tokens=args.max_new_tokens)
            failed += not r.ok(args.atol)
            _out(
                f"{side:5s} {spec:12s} max|diff| {r.max_abs_diff:.2e}  tokens equal {r.tokens_equal}  "
                f"{'ok' if r.ok(args.atol) else 'FAIL'}"
            )
    return 1 if failed else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from prosv_lens.baselines import with_neutral_responses
    from prosv_lens.concepts import load_axbench_concept, load_jsonl_concept
    from prosv_lens.models import default_layer, load_model
    from prosv_lens.training import TrainConfig, train
    from prosv_lens.vector_io import plan_saves, save_all

    if bool(args.axbench) == bool(args.jsonl):
        raise ProsvError(
            "give exactly one data source: --axbench DIR --concept-id N ..., or --jsonl FILE"
        )
    if args.axbench:
        data = [load_axbench_concept(args.axbench, cid) for cid in args.concept_id or [0]]
    else:
        data = [load_jsonl_concept(args.jsonl)]
    if args.max_examples:
        data = [d.subset(range(min(len(d), args.max_examples))) for d in data]
    paths = plan_saves(args.out, [d.name for d in data], overwrite=args.force)  # before any work
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    overrides = option_values(args, _TRAIN_OPTIONS, merge=True)
    layer = overrides.pop("layer", None)
    preset = TrainConfig.prosv if args.preset == "prosv" else TrainConfig.fssv
    cfg = preset(default_layer(model.n_layers) if layer is None else layer, **overrides)
    if cfg.objective == "simpo":
        data = [d if d.negatives is not None else with_neutral_responses(model, d) for d in data]
    result = train(
        model, data, cfg, checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every
    )
    saved = save_all(result.vectors, paths, overwrite=args.force)
    for name, vec in result.vectors.items():
        path = saved[name]
        log = result.logs[name]
        _out(
            f"{name}: loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}, alpha {float(vec.alpha):.2f}, "
            f"|v| {float(vec.v.norm()):.3f} -> {path}"
        )
    _out(
        f"{result.steps} steps in {result.seconds:.1f} s ({result.tokens / result.seconds:.0f} tokens/s)"
    )
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from prosv_lens.vector_io import describe, load_vector, read_metadata

    vector = load_vector(args.path)  # verifies both hashes, consistency, finiteness
    meta = read_metadata(args.path)
    _out("\n".join(describe(vector, meta)))
    _out(json.dumps(meta, indent=2))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from prosv_lens.models import EMBEDDED_MODELS, cache_folder, convert_embedded

    for name in args.convert or []:
        if name not in EMBEDDED_MODELS:
            raise ProsvError(
                f"{name!r} is not an embedded model: choose from {', '.join(EMBEDDED_MODELS)}"
            )
        _out(f"{name}: converted folder {convert_embedded(name)}")
    for name, spec in EMBEDDED_MODELS.items():
        state = (
            "converted"
            if (cache_folder(name) / "model.safetensors").exists()
            else "not converted yet"
        )
        _out(f"{name:24s} {spec.description} [{state}; needs `{spec.install}`]")
    _out("tiny                     random-weight 3-layer Llama for tests (no download)")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from prosv_lens.experiments import (
        ReproduceConfig,
        Resources,
        dry_run,
        get_setting,
        probe_device,
        run_reproduce,
    )
    from prosv_lens.experiments.report import format_summary

    setting = get_setting(args.setting)  # an unknown name fails here, before anything else
    sizes = setting.sizes.replace(
        **option_values(args, ("n_concepts", *_REPRODUCE_SIZES), merge=True)
    )
    cfg = ReproduceConfig(
        setting,
        concept_ids=tuple(args.concept_ids) if args.concept_ids else None,
        sizes=sizes,
        resources=Resources(**option_values(args, _RESOURCES, merge=True)),
        **option_values(args, _REPRODUCE_OPTIONS),
    )
    given = {
        "memory_gb": args.device_memory,
        "tflops": args.device_tflops,
        "bandwidth_gbs": args.device_bandwidth,
    }
    device = None
    if args.dry_run or any(v is not None for v in given.values()):
        import torch

        device = probe_device(args.device, getattr(torch, setting.dtype), **given)
    if args.dry_run:
        text, plan = dry_run(cfg, device)
        _out(text)
        plan.check()  # a run that cannot fit: exit 2, one line naming the stage
        return 0
    summary = run_reproduce(
        cfg,
        device=device,
        log=_progress,
        concepts_per_unit=args.concepts_per_unit,
        workers=args.workers,
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
    )
    _out(format_summary(summary))
    _out(f"results: {cfg.out} ({summary.seconds:.0f} s)")
    return 0


_ANALYSES = ("flow", "patching", "knockout", "decay", "lens", "heads")  # = experiments ANALYSES


def build_parser() -> argparse.ArgumentParser:
    """The ``prosv`` argument parser: one sub-parser per command, each built by its ``_add_*``
    function; options that set a config dataclass come from its fields (:func:`add_options`)."""
    parser = _Parser(
        prog="prosv",
        description="Train, run and understand prompt-only steering vectors (PrOSV) on "
        "TransformerLens models. Offline by default: the embedded SmolLM2-135M-Instruct needs "
        "no hub.",
    )
    parser.add_argument("--version", action="version", version=f"prosv-lens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_judge_validate(sub)
    _add_analyse(sub)
    _add_figures(sub)
    _add_report(sub)
    _add_sweep(sub)
    _add_axbench_eval(sub)
    _add_build_concept(sub)
    _add_positions(sub)
    _add_generate(sub)
    _add_check_cache(sub)
    _add_train(sub)
    _add_inspect(sub)
    _add_models(sub)
    _add_reproduce(sub)
    return parser


def _add_demo(sub: "_Sub") -> None:
    from prosv_lens.experiments.demo import DemoConfig

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on one concept: data, training, baselines, judged steering, "
        "utility, robustness, report",
    )
    add_options(p, DemoConfig, _DEMO_OPTIONS[:1])
    _device_arg(p)
    add_options(p, DemoConfig, _DEMO_OPTIONS[1:], flags={"out_dir": ["--out"]})
    p.set_defaults(func=_cmd_demo)


def _add_judge_validate(sub: "_Sub") -> None:
    p = sub.add_parser(
        "judge-validate", help="AUROC of the offline judge on AxBench latent_eval data"
    )
    p.add_argument(
        "--axbench",
        nargs="+",
        required=True,
        help="AxBench configuration folders (metadata.jsonl + latent_eval_data.parquet)",
    )
    p.add_argument("--json", default=None, help="also write the tables' numbers to this file")
    p.set_defaults(func=_cmd_judge_validate)


def _add_analyse(sub: "_Sub") -> None:
    p = sub.add_parser(
        "analyse",
        help="how a prompt-only vector reaches the answer: attention flow, key/value path "
        "patching, knock-out, decay, logit lens",
    )
    _model_arg(p)
    p.add_argument(
        "--vector", required=True, help="saved vector to analyse (.safetensors/.json stem)"
    )
    p.add_argument(
        "--compare",
        nargs="*",
        metavar="NAME=PATH",
        help="vectors for the decay curve (default: the same direction at every token)",
    )
    p.add_argument("--prompts", nargs="*", help="instructions (default: the built-in eval split)")
    p.add_argument("--n-prompts", type=positive_int, default=3)
    p.add_argument("--max-new-tokens", type=positive_int, default=48)
    p.add_argument("--what", nargs="+", default=list(_ANALYSES), choices=_ANALYSES)
    p.add_argument(
        "--top-layers", type=non_negative_int, default=2, help="layers that get a per-head sweep"
    )
    p.add_argument("--out", required=True, help="folder for the results and index.json")
    p.add_argument("--figures", default=None, help="also draw the figures into this folder")
    p.add_argument("--force", action="store_true", help="replace an earlier analysis in --out")
    p.set_defaults(func=_cmd_analyse)


def _add_figures(sub: "_Sub") -> None:
    p = sub.add_parser("figures", help="redraw every figure from saved results (no model)")
    p.add_argument("--results", default="results", help="folder searched for saved results")
    p.add_argument("--out", default="figures")
    p.set_defaults(func=_cmd_figures)


def _add_report(sub: "_Sub") -> None:
    p = sub.add_parser(
        "report",
        help="the reproduction report: each paper claim against the saved results, with CIs "
        "and a rule-based verdict (no model)",
    )
    p.add_argument("--results", default="results", help="folder of saved results")
    p.add_argument("--out", default="reports/paper_claims.md")
    p.set_defaults(func=_cmd_report)


def _add_sweep(sub: "_Sub") -> None:
    p = sub.add_parser(
        "sweep",
        help="run or resume a hyper-parameter sweep (beta x lr_alpha heatmap or position specs) "
        "from a JSON config, in this process or on Ray workers, then draw its figure",
    )
    p.add_argument("config", help="sweep config, e.g. configs/heatmap_small.json")
    p.add_argument(
        "--out",
        default=None,
        help="results folder (default: results/<config name>); rerun to resume",
    )
    p.add_argument("--figures", default="figures", help="folder for the figure (PNG + PDF)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    _add_ray_options(p)
    p.set_defaults(func=_cmd_sweep)


def _add_ray_options(p: "argparse.ArgumentParser | argparse._ArgumentGroup") -> None:
    """``--workers``, ``--address``, ``--cpus-per-worker``, ``--gpus-per-worker``: where a
    command's work units run (default: one after another in this process)."""
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="run the units on a local Ray instance with N workers, each keeping the model "
        "loaded (needs prosv-lens[ray]; default: in this process)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="run the units on an existing Ray cluster (ray://HOST:10001 or HOST:6379; default "
        "$RAY_ADDRESS if set)",
    )
    p.add_argument(
        "--cpus-per-worker", type=positive_int, default=1, help="CPU cores per Ray worker (1)"
    )
    p.add_argument(
        "--gpus-per-worker",
        type=non_negative_float,
        default=0.0,
        help="GPUs per Ray worker (0; 1 with --device cuda puts one worker on each GPU)",
    )


def _add_axbench_eval(sub: "_Sub") -> None:
    from prosv_lens.experiments.axbench_eval import AxBenchEvalConfig

    p = sub.add_parser(
        "axbench-eval",
        help="PrOSV and FSSV on the first N concepts of an AxBench folder, judged against the "
        "prompt baseline and factor-searched DiffMean; resumable",
    )
    add_options(p, AxBenchEvalConfig, _AXBENCH_EVAL_OPTIONS, flags={"n_concepts": ["--concepts"]})
    p.set_defaults(func=_cmd_axbench_eval)


def _add_build_concept(sub: "_Sub") -> None:
    p = sub.add_parser("build-concept", help="build (and cache) training data for any concept")
    _model_arg(p)
    p.add_argument("concepts", nargs="+")
    p.add_argument("--show", type=non_negative_int, default=3, help="examples to print")
    p.set_defaults(func=_cmd_build_concept)


def _add_positions(sub: "_Sub") -> None:
    p = sub.add_parser("positions", help="show which tokens a position spec selects")
    _model_arg(p)
    p.add_argument("prompts", nargs="+", help="user prompts (chat template applied)")
    p.add_argument("--spec", nargs="+", default=["f2+l2"], help="position specs (default f2+l2)")
    p.add_argument("--system", default=None, help="system message (template default if omitted)")
    p.set_defaults(func=_cmd_positions)


def _add_generate(sub: "_Sub") -> None:
    from prosv_lens.generation import GenerationConfig

    p = sub.add_parser("generate", help="generate, optionally steered by saved vectors")
    _model_arg(p)
    p.add_argument("prompts", nargs="+")
    p.add_argument("--vector", nargs="*", help="saved vectors (.safetensors/.json stem)")
    p.add_argument("--positions", default=None, help="override the vectors' position spec")
    p.add_argument("--scale", type=finite_float, default=1.0, help="multiply each vector's alpha")
    add_options(p, GenerationConfig, _GENERATE_OPTIONS[:1])
    p.add_argument(
        "--temperature",
        type=finite_float,
        default=0.0,
        help="sampling temperature; 0 = greedy (default)",
    )
    add_options(p, GenerationConfig, _GENERATE_OPTIONS[1:])
    p.add_argument("--allow-model-mismatch", action="store_true")
    p.set_defaults(func=_cmd_generate)


def _add_check_cache(sub: "_Sub") -> None:
    p = sub.add_parser("check-cache", help="cached vs uncached steered decoding must agree")
    _model_arg(p)
    p.add_argument(
        "--prompts",
        nargs="+",
        default=["Name three colors.", "Hi", "Write a haiku about autumn leaves."],
    )
    p.add_argument(
        "--spec",
        nargs="+",
        default=["all", "prompt", "f2+l2", "role:user", "role:system", "role:assistant"],
    )
    p.add_argument(
        "--layer", type=non_negative_int, default=None, help="default: 40%% of the depth"
    )
    p.add_argument(
        "--alpha", type=finite_float, default=100.0, help="factor of a random unit vector"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=6)
    p.add_argument(
        "--atol",
        type=non_negative_float,
        default=3e-4,
        help="tolerance (default 3e-4: fp32 decoding noise on SmolLM2 reaches ~1e-4 with no "
        "vector)",
    )
    p.set_defaults(func=_cmd_check_cache)


def _add_train(sub: "_Sub") -> None:
    from prosv_lens.training import TrainConfig

    presets = {"prosv": TrainConfig.prosv(0), "fssv": TrainConfig.fssv(0)}
    differ = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(presets["prosv"], f.name) != getattr(presets["fssv"], f.name)
    ]
    p = sub.add_parser(
        "train", help="train steering vectors jointly (alpha and v), many concepts at once"
    )
    _model_arg(p)
    p.add_argument("--axbench", help="AxBench folder (metadata.jsonl + train_data.parquet)")
    p.add_argument(
        "--concept-id", type=non_negative_int, nargs="*", help="AxBench concept ids (default 0)"
    )
    p.add_argument("--jsonl", help="a JSONL file of {prompt, response[, negative]} rows")
    p.add_argument(
        "--preset",
        choices=list(presets),
        default="prosv",
        help="paper settings: "
        + " or ".join(
            f"{name} ({cfg.positions}; "
            + ", ".join(f"{k} {_show(getattr(cfg, k))}" for k in differ if k != "positions")
            + ")"
            for name, cfg in presets.items()
        ),
    )
    add_options(
        p,
        TrainConfig,
        _TRAIN_OPTIONS,
        merge=True,
        default_help={
            "layer": "40% of the depth",
            **{
                k: " or ".join(f"{n} {_show(getattr(c, k))}" for n, c in presets.items())
                for k in differ
            },
        },
    )
    p.add_argument(
        "--max-examples",
        type=positive_int,
        default=None,
        help="use only the first N examples per concept",
    )
    p.add_argument("--checkpoint-dir", default=None, help="save and resume the run state here")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=0)
    p.add_argument(
        "--out", default="vectors", help="folder for the trained vectors (default: vectors)"
    )
    p.add_argument("--force", action="store_true", help="replace vectors of the same name in --out")
    p.set_defaults(func=_cmd_train)


def _add_inspect(sub: "_Sub") -> None:
    p = sub.add_parser("inspect", help="verify a saved vector and print its provenance")
    p.add_argument("path")
    p.set_defaults(func=_cmd_inspect)


def _add_models(sub: "_Sub") -> None:
    p = sub.add_parser("models", help="list embedded models; --convert prepares their cache")
    p.add_argument("--convert", nargs="*", metavar="NAME")
    p.set_defaults(func=_cmd_models)


def _add_reproduce(sub: "_Sub") -> None:
    from prosv_lens.experiments import SETTINGS, ReproduceConfig, Resources, RunSizes

    p = sub.add_parser(
        "reproduce",
        help="one row of the paper's main table end to end: PrOSV and FSSV trained jointly, "
        "DiffMean and prompt baselines, judged steering and utility, resumable; --dry-run plans "
        "memory and time",
    )
    *first, last = SETTINGS
    p.add_argument("setting", help=f"{', '.join(first)} or {last} (see docs/reproduce.md)")
    which = p.add_mutually_exclusive_group()
    add_options(which, RunSizes, ("n_concepts",), merge=True, flags={"n_concepts": ["--concepts"]})
    which.add_argument(
        "--concept-ids",
        type=non_negative_int,
        nargs="+",
        default=None,
        help=field_help(ReproduceConfig, "concept_ids"),
    )
    add_options(p, ReproduceConfig, _REPRODUCE_OPTIONS, flags={"out_dir": ["--out"]})
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the memory and time plan of each stage (no model load, no download) and "
        "refuse a run that cannot fit",
    )
    sizes = p.add_argument_group("sizes (default: the paper's; smaller for toy runs)")
    add_options(
        sizes,
        RunSizes,
        _REPRODUCE_SIZES,
        merge=True,
        flags={"n_train": ["--n-train", "--max-examples"]},
    )
    mem = p.add_argument_group("memory knobs and planning")
    add_options(mem, Resources, _RESOURCES, merge=True)
    mem.add_argument(
        "--device-memory",
        type=positive_float,
        default=None,
        metavar="GB",
        help="plan for a device with this much memory instead of the one here",
    )
    mem.add_argument(
        "--device-tflops", type=positive_float, default=None, help="plan with this matmul rate"
    )
    mem.add_argument(
        "--device-bandwidth",
        type=positive_float,
        default=None,
        metavar="GB/S",
        help="plan with this memory bandwidth",
    )
    _add_units_options(p.add_argument_group("work units and Ray (docs/ray.md)"))
    p.set_defaults(func=_cmd_reproduce)


def _add_units_options(group: Any) -> None:
    """``--concepts-per-unit``, ``--workers``, ``--address`` and the per-worker resources of
    ``prosv reproduce``."""
    group.add_argument(
        "--concepts-per-unit",
        type=positive_int,
        default=None,
        metavar="K",
        help="run in work units, K concepts per training unit, resumable unit by unit (default: "
        "one pass over all concepts in this process; 1 with --workers/--address)",
    )
    _add_ray_options(group)


_DEMO_OPTIONS = (
    "model",
    "dtype",
    "concept",
    "layer",
    "epochs",
    "n_train",
    "n_eval",
    "max_new_tokens",
    "n_utility",
    "n_kl_prompts",
    "judge",
    "seed",
    "run",
    "out_dir",
)
_AXBENCH_EVAL_OPTIONS = ("axbench", "n_concepts", "out", "sizes", "model", "dtype", "layer", "seed")
_GENERATE_OPTIONS = ("max_new_tokens", "top_p", "seed")
_TRAIN_OPTIONS = (
    "layer",
    "positions",
    "objective",
    "variant",
    "optimizer",
    "beta",
    "c",
    "lr_v",
    "lr_alpha",
    "epochs",
    "batch_size",
    "max_response_tokens",
    "seed",
    "path",
    "param_dtype",
    "tf32",
    "logits_budget_mb",
    "pad_multiple",
    "compile",
)
_REPRODUCE_OPTIONS = ("axbench", "model", "device", "out_dir", "judge")
_REPRODUCE_SIZES = (
    "n_train",
    "epochs",
    "batch_size",
    "max_response_tokens",
    "n_eval",
    "max_new_tokens",
    "eval_batch_size",
    "n_utility",
    "utility_tokens",
    "n_kl_prompts",
    "utility_batch_size",
    "seed",
)
_RESOURCES = ("micro_rows", "logits_budget_mb", "cache_budget_mb")


class MirroredOptions(NamedTuple):
    """Options of one command made from fields of a config dataclass (see :func:`add_options`).

    Attributes:
        command: the subcommand.
        config: the dataclass.
        names: the fields that are options.
        merge: ``True``: unset options are ``None`` and only given ones override the config's
            values; ``False``: each option's default is the field's default.
    """

    command: str
    config: type
    names: tuple[str, ...]
    merge: bool


def mirrored_options() -> list[MirroredOptions]:
    """Every set of options built from a config dataclass, for the tests that check each
    option's default and help against its field."""
    from prosv_lens.experiments import ReproduceConfig, Resources, RunSizes
    from prosv_lens.experiments.axbench_eval import AxBenchEvalConfig
    from prosv_lens.experiments.demo import DemoConfig
    from prosv_lens.generation import GenerationConfig
    from prosv_lens.training import TrainConfig

    return [
        MirroredOptions("demo", DemoConfig, _DEMO_OPTIONS, False),
        MirroredOptions("axbench-eval", AxBenchEvalConfig, _AXBENCH_EVAL_OPTIONS, False),
        MirroredOptions("generate", GenerationConfig, _GENERATE_OPTIONS, False),
        MirroredOptions("train", TrainConfig, _TRAIN_OPTIONS, True),
        MirroredOptions("reproduce", ReproduceConfig, _REPRODUCE_OPTIONS, False),
        MirroredOptions("reproduce", RunSizes, ("n_concepts", *_REPRODUCE_SIZES), True),
        MirroredOptions("reproduce", Resources, _RESOURCES, True),
    ]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; a usage error exits 2 with one line naming the subcommand."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _interrupted(args: argparse.Namespace) -> str:
    """What to do after Ctrl-C: how to resume, for the commands that can."""
    if args.command == "train" and args.checkpoint_dir:
        return (
            "interrupted: rerun the same command to resume from the last checkpoint in "
            f"{args.checkpoint_dir}"
        )
    if args.command == "demo" and args.run:
        return f"interrupted: rerun the same command to resume in the run folder {args.run}"
    if args.command == "demo":
        return (
            f"interrupted: rerun with --run {Path(args.out_dir) / 'demo-YYYYMMDD-HHMMSS'} (the newest "
            "demo-* run folder there) to resume in it"
        )
    if args.command == "sweep":
        out = args.out or Path("results") / Path(args.config).stem
        return f"interrupted: rerun the same command to resume in the run folder {out}"
    if args.command == "reproduce":
        out = args.out_dir or Path("results") / "reproduce" / args.setting
        return f"interrupted: rerun the same command to resume in the run folder {out}"
    return "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``prosv`` command; returns its exit status.

    Bad input (a :class:`ProsvError`, or a usage error from argparse) is one line on stderr and
    status 2; Ctrl-C is one line and status 130. Anything else is a bug and keeps its traceback.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parse(argv)
    try:
        return int(args.func(args))
    except ProsvError as e:
        message = " ".join(str(e).split())
        sys.stderr.write(f"prosv {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        start = "\n" if sys.stderr.isatty() else ""  # after a progress bar's partial line
        sys.stderr.write(f"{start}prosv {args.command}: {_interrupted(args)}\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
