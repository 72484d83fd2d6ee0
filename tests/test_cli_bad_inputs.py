"""The CLI's error promise (README, issue 14), checked on every subcommand.

On bad input ``prosv`` exits with status 2 and prints ONE line on stderr naming the problem and
the fix, never a traceback; it prints no partial results, changes no file that was there and
leaves no new file behind. Each case below runs :func:`prosv_lens.cli.main` in-process on a
small world of valid and broken fixtures built in ``tmp_path`` (the working directory of the
case, so default output folders land there too). Models are ``tiny`` (random weights, instant).
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from prosv_lens.analysis.results import FORMAT_VERSION
from prosv_lens.cli import main
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import make_tiny_model
from prosv_lens.vector_io import save_vector

ROWS = [
    {"prompt": f"Tell me about item {i}.", "response": f"Item {i} is by the sea."} for i in range(6)
]


def _jsonl(rows: list) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def _row(**fields: object) -> str:
    return json.dumps(fields)


@pytest.fixture(scope="module")
def tiny_vector_args() -> dict:
    """What a valid vector for ``--model tiny`` needs (d_model, model id, chat template hash)."""
    tiny = make_tiny_model()
    return {
        "d_model": tiny.d_model,
        "model_id": tiny.model_id,
        "chat_template_hash": tiny.chat_template_hash,
    }


def _nan_alpha_vector(path: Path, args: dict) -> None:
    """A vector whose tensor file holds alpha = NaN, its hashes recomputed (as if saved so)."""
    from safetensors.torch import save_file

    from prosv_lens import vector_io

    save_vector(
        SteeringVector.zeros(
            args["d_model"],
            layer=0,
            model_id=args["model_id"],
            chat_template_hash=args["chat_template_hash"],
        ),
        path,
    )
    tensors, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
    save_file({"v": torch.ones(args["d_model"]), "alpha": torch.tensor(float("nan"))}, tensors)
    meta = json.loads(meta_path.read_text())
    meta["alpha"] = float("nan")
    meta["tensors_sha256"] = hashlib.sha256(tensors.read_bytes()).hexdigest()
    meta["metadata_sha256"] = vector_io._metadata_hash(meta)
    meta_path.write_text(json.dumps(meta))


def _world(tmp: Path, args: dict) -> None:
    """Valid and broken inputs, all under ``tmp``."""
    w = {
        # concept JSONL files
        "good.jsonl": _jsonl(ROWS),
        "empty.jsonl": "",
        "blank.jsonl": "\n   \n\n",
        "broken.jsonl": _jsonl(ROWS[:1]) + "\n" + '{"prompt": "a", "response"\n',
        "truncated.jsonl": _jsonl(ROWS[:2]) + '{"prompt": "Tell me',
        "noresponse.jsonl": _jsonl(ROWS[:1]) + _row(prompt="x") + "\n",
        "number_prompt.jsonl": _row(prompt=3, response="x") + "\n",
        "list_response.jsonl": _row(prompt="x", response=["a"]) + "\n",
        "blank_response.jsonl": _row(prompt="x", response="   ") + "\n",
        "partial_negative.jsonl": _row(prompt="a", response="b", negative="c")
        + "\n"
        + _row(prompt="d", response="e")
        + "\n",
        "list_row.jsonl": "[1, 2]\n",
        # sweep configs
        "sweep_empty.json": "",
        "sweep_broken.json": '{"kind": "heatmap", "betas": [1, 2',
        "sweep_list.json": "[1, 2]",
        "sweep_kind.json": json.dumps({"kind": "grid"}),
        "sweep_nan.json": '{"kind": "heatmap", "betas": [NaN, 1]}',
        "sweep_inf_int.json": '{"kind": "heatmap", "n_eval": Infinity}',
        "sweep_str_epochs.json": json.dumps({"kind": "heatmap", "epochs": "x"}),
        "sweep_ids_repeat.json": json.dumps(
            {"kind": "heatmap", "axbench": "ax", "concept_ids": [1, 1]}
        ),
        "sweep_per_unit.json": json.dumps({"kind": "heatmap", "concepts_per_unit": 0}),
        "sweep_float_epochs.json": json.dumps({"kind": "heatmap", "epochs": 2.5}),
        "sweep_bool_layer.json": json.dumps({"kind": "heatmap", "layer": True}),
        "sweep_layer.json": json.dumps({"kind": "heatmap", "layer": -1}),
        "sweep_unknown.json": json.dumps({"kind": "heatmap", "beta": [1]}),
        "sweep_betas_scalar.json": json.dumps({"kind": "heatmap", "betas": 3}),
        "sweep_betas_str.json": json.dumps({"kind": "heatmap", "lr_alphas": ["a"]}),
        "sweep_spec.json": json.dumps({"kind": "positions", "specs": ["f2+banana"]}),
        "sweep_model_str.json": json.dumps({"kind": "positions", "model": 3}),
        "sweep_big_layer.json": json.dumps({"kind": "heatmap", "model": "tiny", "layer": 99}),
        "sweep_ok.json": json.dumps(
            {
                "kind": "positions",
                "model": "tiny",
                "layer": 1,
                "specs": ["all"],
                "n_train": 2,
                "n_eval": 1,
            }
        ),
        # results
        "res_broken/demo_ocean/results.json": '{"steering": [',
        "res_nonutf8/heatmap_medium/sweep.json": b'{"kind": "heatmap", "x": "\xff"}',
        "res_list/demo_ocean/results.json": "[1, 2, 3]",
        "res_sweep_broken/a/sweep.json": '{"kind": "heatmap", "cells": [',
        "res_npz_broken/flow.json": json.dumps(
            {"kind": "AttentionFlowResult", "format_version": FORMAT_VERSION, "fields": {}}
        ),
        "res_npz_broken/flow.npz": b"PK not a zip",
        "res_patching_broken/attention_ocean/patching.json": '{"kind": "PathPatchingResult", ',
        "res_patching_broken/attention_ocean/patching.npz": b"PK",
        # AxBench folders
        "ax_meta_broken/metadata.jsonl": '{"concept_id": 0, "concept": "x"}\n{"concept_id": 1,\n',
        "ax_meta_broken/train_data.parquet": b"PAR1 not really",
        "ax_meta_broken/latent_eval_data.parquet": b"PAR1 not really",
        "ax_parquet_broken/metadata.jsonl": '{"concept_id": 0, "concept": "x", '
        '"concept_genres_map": {"x": ["text"]}}\n',
        "ax_parquet_broken/train_data.parquet": b"PAR1 not really",
        "ax_parquet_broken/latent_eval_data.parquet": b"PAR1 not really",
        "ax_meta_nonutf8/metadata.jsonl": b'{"concept_id": 0, "concept": "\xff"}\n',
        "ax_meta_nonutf8/train_data.parquet": b"PAR1",
        "ax_meta_empty/metadata.jsonl": "",
        "ax_meta_empty/train_data.parquet": b"PAR1",
        # models
        "model_garbage/config.json": "garbage",
        "model_garbage/model.safetensors": b"garbage",
        "model_no_tokenizer/config.json": json.dumps(
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
        ),
        # other files
        "afile": "just a file",
        "garbage.safetensors": b"garbage",
        "garbage.json": "{",
        "nonutf8.jsonl": b'{"prompt": "\xff\xfe", "response": "x"}\n',
    }
    for name, content in w.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for folder in ("adir", "emptydir", "model_empty", "existing_dir", "runs"):
        (tmp / folder).mkdir()
    (tmp / "afile.jsonl").mkdir()  # a folder named like a file
    vec = SteeringVector.zeros(
        args["d_model"],
        layer=0,
        model_id=args["model_id"],
        chat_template_hash=args["chat_template_hash"],
    )
    save_vector(vec, tmp / "vec")
    save_vector(vec, tmp / "vecs" / "good")  # an existing trained vector for `train --out`
    save_vector(SteeringVector.zeros(16, layer=0, model_id="other"), tmp / "narrow")
    save_vector(vec.replace(layer=2), tmp / "deep")  # tiny's last layer: nothing above it
    _nan_alpha_vector(tmp / "nanvec", args)
    (tmp / "reproduce_out").mkdir()
    (tmp / "reproduce_out" / "notes.txt").write_text("someone else's folder")


T = "tiny"
JSONL = ["train", "--model", T, "--layer", "1", "--epochs", "1", "--out", "vecs_new", "--jsonl"]
TRAIN = [*JSONL[:-1], "--jsonl", "good.jsonl"]
GEN = ["generate", "--model", T, "Hi", "--max-new-tokens", "2"]
POS = ["positions", "--model", T, "Hi"]
CC = ["check-cache", "--model", T, "--max-new-tokens", "2", "--spec", "all"]
AN = ["analyse", "--model", T, "--vector", "vec", "--out", "analysis_out", "--n-prompts", "1"]
DEMO = ["demo", "--model", T, "--out", "runs"]
REPRO = ["reproduce", "smollm2-l12", "--dry-run"]
RUN = ["reproduce", "smollm2-l12", "--model", T, "--concepts", "1", "--out", "repro_new"]

# (id, argv, a fragment the error line must contain, or "")
CASES: list[tuple[str, list[str], str]] = [
    # -- the parser -------------------------------------------------------------------------
    ("no-command", [], "required: COMMAND"),
    ("unknown-command", ["banana"], "invalid choice"),
    ("unknown-flag", ["models", "--bogus"], "unrecognized arguments: --bogus"),
    # -- demo ----------------------------------------------------------------------------------
    ("demo-epochs-zero", [*DEMO, "--epochs", "0"], "--epochs"),
    ("demo-epochs-word", [*DEMO, "--epochs", "x"], "invalid int value: 'x'"),
    ("demo-n-eval-small", [*DEMO, "--n-eval", "2"], "n_eval"),
    ("demo-n-eval-negative", [*DEMO, "--n-eval", "-5"], "--n-eval"),
    ("demo-judge", [*DEMO, "--judge", "banana"], "--judge"),
    ("demo-dtype", [*DEMO, "--dtype", "int8"], "int8"),
    ("demo-layer-negative", [*DEMO, "--layer", "-1"], "--layer"),
    ("demo-max-new-tokens-zero", [*DEMO, "--max-new-tokens", "0"], "--max-new-tokens"),
    ("demo-n-train-zero", [*DEMO, "--n-train", "0"], "--n-train"),
    ("demo-kl-zero", [*DEMO, "--n-kl-prompts", "0"], "--n-kl-prompts"),
    ("demo-run-is-a-file", [*DEMO, "--run", "afile"], "afile"),
    ("demo-out-under-a-file", ["demo", "--model", T, "--out", "afile/runs"], "afile"),
    ("demo-concept-blank", [*DEMO, "--concept", "  "], "concept"),
    # -- judge-validate ------------------------------------------------------------------------
    ("jv-no-axbench", ["judge-validate"], "--axbench"),
    ("jv-missing-folder", ["judge-validate", "--axbench", "nope"], "nope"),
    ("jv-not-axbench", ["judge-validate", "--axbench", "emptydir"], "emptydir"),
    ("jv-file", ["judge-validate", "--axbench", "afile"], "afile"),
    ("jv-broken-metadata", ["judge-validate", "--axbench", "ax_meta_broken"], "metadata.jsonl:2"),
    ("jv-nonutf8-metadata", ["judge-validate", "--axbench", "ax_meta_nonutf8"], "UTF-8"),
    ("jv-empty-metadata", ["judge-validate", "--axbench", "ax_meta_empty"], "empty"),
    ("jv-broken-parquet", ["judge-validate", "--axbench", "ax_parquet_broken"], "parquet"),
    (
        "jv-json-under-file",
        ["judge-validate", "--axbench", "ax_parquet_broken", "--json", "afile/out.json"],
        "afile",
    ),
    (
        "jv-json-is-dir",
        ["judge-validate", "--axbench", "ax_parquet_broken", "--json", "existing_dir"],
        "existing_dir",
    ),
    # -- analyse -------------------------------------------------------------------------------
    ("an-missing-vector-flag", ["analyse", "--model", T, "--out", "o"], "--vector"),
    ("an-missing-vector", [*AN[:4], "nope", *AN[5:]], "nope"),
    ("an-garbage-vector", [*AN[:4], "garbage", *AN[5:]], "garbage"),
    ("an-narrow-vector", [*AN[:4], "narrow", *AN[5:]], "d_model"),
    ("an-last-layer-vector", [*AN[:4], "deep", *AN[5:]], "layer 2"),
    ("an-n-prompts-zero", [*AN, "--n-prompts", "0"], "--n-prompts"),
    ("an-top-layers-negative", [*AN, "--top-layers", "-1"], "--top-layers"),
    ("an-max-new-tokens-one", [*AN, "--max-new-tokens", "1"], "max_new_tokens"),
    ("an-what", [*AN, "--what", "banana"], "--what"),
    ("an-compare-format", [*AN, "--compare", "nopath"], "NAME=PATH"),
    ("an-compare-missing", [*AN, "--compare", "x=nope"], "nope"),
    ("an-out-under-file", [*AN[:6], "afile/out", *AN[7:]], "afile"),
    ("an-out-is-file", [*AN[:6], "afile", *AN[7:]], "afile"),
    ("an-device", [*AN, "--device", "banana"], "banana"),
    ("an-blank-prompt", [*AN, "--prompts", " "], "prompt"),
    # -- figures -------------------------------------------------------------------------------
    ("fig-missing", ["figures", "--results", "nope"], "nope"),
    ("fig-empty", ["figures", "--results", "emptydir"], "emptydir"),
    ("fig-file", ["figures", "--results", "afile"], "afile"),
    ("fig-broken-results", ["figures", "--results", "res_broken"], "results.json"),
    ("fig-broken-sweep", ["figures", "--results", "res_sweep_broken"], "sweep.json"),
    ("fig-nonutf8-sweep", ["figures", "--results", "res_nonutf8"], "sweep.json"),
    ("fig-broken-npz", ["figures", "--results", "res_npz_broken"], "flow.npz"),
    # -- report --------------------------------------------------------------------------------
    ("rep-missing", ["report", "--results", "nope", "--out", "r.md"], "nope"),
    ("rep-broken", ["report", "--results", "res_broken", "--out", "r.md"], "results.json"),
    ("rep-nonutf8", ["report", "--results", "res_nonutf8", "--out", "r.md"], "sweep.json"),
    (
        "rep-broken-patching",
        ["report", "--results", "res_patching_broken", "--out", "r.md"],
        "patching.json:1",
    ),
    ("rep-wrong-shape", ["report", "--results", "res_list", "--out", "r.md"], "results.json"),
    ("rep-out-under-file", ["report", "--results", "emptydir", "--out", "afile/r.md"], "afile"),
    (
        "rep-out-is-dir",
        ["report", "--results", "emptydir", "--out", "existing_dir"],
        "existing_dir",
    ),
    # -- axbench-eval --------------------------------------------------------------------------
    ("ax-missing", ["axbench-eval", "--axbench", "nope", "--out", "o"], "nope"),
    ("ax-file", ["axbench-eval", "--axbench", "afile", "--out", "o"], "afile"),
    (
        "ax-concepts-0",
        ["axbench-eval", "--axbench", "nope", "--concepts", "0", "--out", "o"],
        "--concepts",
    ),
    ("ax-sizes", ["axbench-eval", "--axbench", "nope", "--sizes", "huge", "--out", "o"], "--sizes"),
    # -- sweep ---------------------------------------------------------------------------------
    ("sw-missing", ["sweep", "nope.json"], "nope.json"),
    ("sw-dir", ["sweep", "adir"], "adir"),
    ("sw-empty", ["sweep", "sweep_empty.json"], "empty"),
    ("sw-broken", ["sweep", "sweep_broken.json"], "sweep_broken.json:1"),
    ("sw-nonutf8", ["sweep", "nonutf8.jsonl"], "UTF-8"),
    ("sw-list", ["sweep", "sweep_list.json"], "kind"),
    ("sw-kind", ["sweep", "sweep_kind.json"], "kind"),
    ("sw-nan-beta", ["sweep", "sweep_nan.json"], "betas"),
    ("sw-inf-int", ["sweep", "sweep_inf_int.json"], "n_eval"),
    ("sw-str-epochs", ["sweep", "sweep_str_epochs.json"], "epochs"),
    ("sw-float-epochs", ["sweep", "sweep_float_epochs.json"], "epochs"),
    ("sw-bool-layer", ["sweep", "sweep_bool_layer.json"], "layer"),
    ("sw-negative-layer", ["sweep", "sweep_layer.json"], "layer"),
    ("sw-unknown-field", ["sweep", "sweep_unknown.json"], "beta"),
    ("sw-betas-scalar", ["sweep", "sweep_betas_scalar.json"], "betas"),
    ("sw-lr-alphas-str", ["sweep", "sweep_betas_str.json"], "lr_alphas"),
    ("sw-spec", ["sweep", "sweep_spec.json"], "banana"),
    ("sw-model-number", ["sweep", "sweep_model_str.json"], "model"),
    ("sw-layer-too-big", ["sweep", "sweep_big_layer.json", "--out", "sweep_new"], "layer 99"),
    ("sw-out-under-file", ["sweep", "sweep_ok.json", "--out", "afile/x"], "afile"),
    ("sw-workers-zero", ["sweep", "sweep_ok.json", "--workers", "0"], "--workers"),
    (
        "sw-gpus-negative",
        ["sweep", "sweep_ok.json", "--gpus-per-worker", "-1"],
        "--gpus-per-worker",
    ),
    (
        "sw-address-form",
        ["sweep", "sweep_ok.json", "--out", "o", "--address", "nowhere"],
        "HOST:PORT",
    ),
    (
        "sw-address-unreachable",
        ["sweep", "sweep_ok.json", "--out", "o", "--address", "127.0.0.1:9"],
        "cannot reach the Ray cluster at 127.0.0.1:9",
    ),
    ("sw-concept-ids-repeat", ["sweep", "sweep_ids_repeat.json"], "concept_ids has repeats"),
    ("sw-per-unit-zero", ["sweep", "sweep_per_unit.json"], "concepts_per_unit"),
    ("sw-out-is-file", ["sweep", "sweep_ok.json", "--out", "afile"], "afile"),
    (
        "sw-figures-under-file",
        ["sweep", "sweep_ok.json", "--out", "o", "--figures", "afile/f"],
        "afile",
    ),
    ("sw-device", ["sweep", "sweep_ok.json", "--out", "sweep_new", "--device", "banana"], "banana"),
    # -- build-concept -------------------------------------------------------------------------
    ("bc-none", ["build-concept", "--model", T], "concepts"),
    ("bc-show-negative", ["build-concept", "--model", T, "x", "--show", "-1"], "--show"),
    ("bc-blank", ["build-concept", "--model", T, " "], "concept"),
    ("bc-model-empty-folder", ["build-concept", "--model", "model_empty", "x"], "config.json"),
    ("bc-model-garbage", ["build-concept", "--model", "model_garbage", "x"], "model_garbage"),
    (
        "bc-model-no-tokenizer",
        ["build-concept", "--model", "model_no_tokenizer", "x"],
        "model_no_tokenizer",
    ),
    ("bc-model-file", ["build-concept", "--model", "afile", "x"], "afile"),
    # -- positions -----------------------------------------------------------------------------
    ("pos-no-prompt", ["positions", "--model", T], "prompts"),
    ("pos-empty-spec", [*POS, "--spec", ""], "spec"),
    ("pos-negative-spec", [*POS, "--spec", "f-1"], "f-1"),
    ("pos-bad-spec", [*POS, "--spec", "l2+banana"], "banana"),
    ("pos-bad-role", [*POS, "--spec", "role:banana"], "banana"),
    ("pos-blank-prompt", ["positions", "--model", T, "  "], "prompt"),
    ("pos-device-banana", [*POS, "--device", "banana"], "banana"),
    ("pos-device-cuda", [*POS, "--device", "cuda:7"], "cuda"),
    ("pos-dtype", [*POS, "--dtype", "int8"], "int8"),
    # -- generate ------------------------------------------------------------------------------
    ("gen-scale-nan", [*GEN, "--scale", "nan"], "--scale"),
    ("gen-temperature-inf", [*GEN, "--temperature", "inf"], "--temperature"),
    ("gen-temperature-negative", [*GEN, "--temperature", "-1"], "temperature"),
    ("gen-top-p", [*GEN, "--top-p", "2"], "top_p"),
    ("gen-max-new-tokens-zero", [*GEN, "--max-new-tokens", "0"], "--max-new-tokens"),
    ("gen-missing-vector", [*GEN, "--vector", "nope"], "nope"),
    ("gen-garbage-vector", [*GEN, "--vector", "garbage"], "garbage"),
    ("gen-nan-vector", [*GEN, "--vector", "nanvec"], "nanvec"),
    ("gen-narrow-vector", [*GEN, "--vector", "narrow"], "d_model"),
    ("gen-vector-positions", [*GEN, "--vector", "vec", "--positions", "f2+banana"], "banana"),
    ("gen-scale-nan-with-vector", [*GEN, "--vector", "vec", "--scale=-inf"], "--scale"),
    # -- check-cache ---------------------------------------------------------------------------
    ("cc-layer-too-big", [*CC, "--layer", "99"], "layer 99"),
    ("cc-layer-negative", [*CC, "--layer", "-1"], "--layer"),
    ("cc-alpha-nan", [*CC, "--alpha", "nan"], "--alpha"),
    ("cc-atol-negative", [*CC, "--atol", "-1"], "--atol"),
    ("cc-bad-spec", [*CC[:-1], "f2+banana"], "banana"),
    ("cc-max-new-tokens-zero", [*CC, "--max-new-tokens", "0"], "--max-new-tokens"),
    ("cc-blank-prompt", [*CC, "--prompts", ""], "prompt"),
    # -- train ---------------------------------------------------------------------------------
    ("tr-missing", [*JSONL, "nope.jsonl"], "nope.jsonl"),
    ("tr-dir", [*JSONL, "adir"], "adir"),
    ("tr-dir-named-jsonl", [*JSONL, "afile.jsonl"], "afile.jsonl"),
    ("tr-empty", [*JSONL, "empty.jsonl"], "empty"),
    ("tr-blank", [*JSONL, "blank.jsonl"], "empty"),
    ("tr-broken", [*JSONL, "broken.jsonl"], "broken.jsonl:3"),
    ("tr-truncated", [*JSONL, "truncated.jsonl"], "truncated.jsonl:3"),
    ("tr-nonutf8", [*JSONL, "nonutf8.jsonl"], "UTF-8"),
    ("tr-no-response", [*JSONL, "noresponse.jsonl"], "noresponse.jsonl:2"),
    ("tr-number-prompt", [*JSONL, "number_prompt.jsonl"], "'prompt'"),
    ("tr-list-response", [*JSONL, "list_response.jsonl"], "'response'"),
    ("tr-blank-response", [*JSONL, "blank_response.jsonl"], "'response'"),
    ("tr-partial-negative", [*JSONL, "partial_negative.jsonl"], "partial_negative.jsonl:2"),
    ("tr-list-row", [*JSONL, "list_row.jsonl"], "list_row.jsonl:1"),
    ("tr-epochs-zero", [*TRAIN, "--epochs", "0"], "--epochs"),
    ("tr-epochs-negative", [*TRAIN, "--epochs", "-1"], "--epochs"),
    ("tr-batch-size-zero", [*TRAIN, "--batch-size", "0"], "--batch-size"),
    ("tr-lr-v-nan", [*TRAIN, "--lr-v", "nan"], "--lr-v"),
    ("tr-beta-inf", [*TRAIN, "--beta", "inf"], "--beta"),
    ("tr-c-minus-inf", [*TRAIN, "--c=-inf"], "--c"),
    ("tr-lr-alpha-word", [*TRAIN, "--lr-alpha", "fast"], "invalid float value"),
    ("tr-checkpoint-every-negative", [*TRAIN, "--checkpoint-every", "-1"], "--checkpoint-every"),
    ("tr-max-examples-negative", [*TRAIN, "--max-examples", "-1"], "--max-examples"),
    ("tr-layer-too-big", [*TRAIN, "--layer", "99"], "layer 99"),
    ("tr-positions", [*TRAIN, "--positions", "banana"], "banana"),
    ("tr-out-under-file", [*JSONL[:-2], "afile/v", "--jsonl", "good.jsonl"], "afile"),
    ("tr-out-existing-vector", [*JSONL[:-2], "vecs", "--jsonl", "good.jsonl"], "--force"),
    ("tr-axbench-missing", ["train", "--model", T, "--axbench", "nope"], "nope"),
    (
        "tr-axbench-broken",
        ["train", "--model", T, "--axbench", "ax_meta_broken"],
        "metadata.jsonl:2",
    ),
    (
        "tr-concept-id-negative",
        ["train", "--model", T, "--axbench", "adir", "--concept-id", "-1"],
        "--concept-id",
    ),
    ("tr-two-sources", [*TRAIN, "--axbench", "adir"], "exactly one data source"),
    # -- inspect -------------------------------------------------------------------------------
    ("in-missing", ["inspect", "nope"], "nope"),
    ("in-garbage", ["inspect", "garbage.safetensors"], "garbage"),
    ("in-dir", ["inspect", "adir"], "adir"),
    ("in-nan-alpha", ["inspect", "nanvec"], "nanvec"),
    # -- models --------------------------------------------------------------------------------
    ("mo-convert-unknown", ["models", "--convert", "nope"], "nope"),
    # -- reproduce -----------------------------------------------------------------------------
    ("re-setting", ["reproduce", "nope", "--dry-run"], "nope"),
    ("re-epochs-zero", [*REPRO, "--epochs", "0"], "--epochs"),
    ("re-n-eval-one", [*REPRO, "--n-eval", "1"], "n_eval"),
    ("re-memory-nan", [*REPRO, "--device-memory", "nan"], "--device-memory"),
    ("re-memory-negative", [*REPRO, "--device-memory", "-4"], "--device-memory"),
    ("re-tflops-inf", [*REPRO, "--device-tflops", "inf"], "--device-tflops"),
    ("re-device-banana", [*REPRO, "--device", "banana"], "banana"),
    ("re-device-cuda", [*REPRO, "--device", "cuda"], "CUDA"),
    ("re-judge", [*REPRO, "--judge", "banana"], "--judge"),
    ("re-both-concepts", [*REPRO, "--concepts", "1", "--concept-ids", "2"], "not allowed"),
    ("re-micro-rows-zero", [*REPRO, "--micro-rows", "0"], "--micro-rows"),
    ("re-axbench-missing", [*RUN, "--axbench", "nope"], "nope"),
    ("re-axbench-broken", [*RUN, "--axbench", "ax_meta_broken"], "metadata.jsonl:2"),
    ("re-out-file", [*RUN[:-1], "afile", "--axbench", "ax_meta_broken"], "afile"),
    (
        "re-out-foreign",
        [*RUN[:-1], "reproduce_out", "--axbench", "ax_meta_broken"],
        "reproduce_out",
    ),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


def test_enough_cases_on_every_subcommand():
    from prosv_lens.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {argv[0] for _, argv, _ in CASES if argv}
    assert set(sub.choices) <= covered, set(sub.choices) - covered
    assert len(CASES) >= 70 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(
    argv, says, tmp_path, monkeypatch, capsys, tiny_vector_args
):
    _world(tmp_path, tiny_vector_args)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROSV_CACHE", str(tmp_path / "cache"))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].strip(), f"not one line: {err!r}"
    assert lines[0].startswith("prosv"), lines[0]
    assert says in lines[0], f"{says!r} not in {lines[0]!r}"
    assert out == "", f"partial results on stdout: {out[:500]!r}"
    assert _snapshot(tmp_path) == before, "files changed or appeared"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--jsonl", "x.jsonl", "--checkpoint-dir", "ck"], "last checkpoint in ck"),
        (["train", "--jsonl", "x.jsonl"], "prosv train: interrupted"),
        (["sweep", "configs/s.json"], "resume in the run folder results/s"),
        (["reproduce", "smollm2-l12", "--out", "r"], "resume in the run folder r"),
        (["demo", "--run", "runs/demo-1"], "resume in the run folder runs/demo-1"),
        (["demo"], "rerun with --run runs/demo-"),
        (["models"], "prosv models: interrupted"),
    ],
)
def test_ctrl_c_is_one_line_saying_how_to_resume_and_exit_130(argv, says, monkeypatch, capsys):
    import prosv_lens.cli as cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"_cmd_{argv[0]}", interrupted)
    assert main(argv) == 130
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and says in err, err
