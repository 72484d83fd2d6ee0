import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prosv_lens.cli import main
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import make_tiny_model
from prosv_lens.vector_io import load_vector, save_vector

COMMANDS = (
    "demo", "positions", "generate", "check-cache", "inspect", "models", "judge-validate",
    "build-concept", "analyse", "figures", "sweep", "report", "reproduce", "axbench-eval",
)  # fmt: skip


def test_console_script_help_lists_subcommands():
    beside = Path(sys.executable).with_name("prosv")  # the venv's bin/, even when not on PATH
    exe = str(beside) if beside.exists() else shutil.which("prosv")
    assert exe, "the prosv console script is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in COMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "usage: prosv " + cmd in capsys.readouterr().out


def test_positions_shows_selected_tokens(capsys):
    assert main(["positions", "--model", "tiny", "Hi", "--spec", "f2+l2", "role:user"]) == 0
    out = capsys.readouterr().out
    assert "spec f2+l2  (prompt-only)" in out and "0:'<|im_start|>', 1:'s'" in out
    assert "spec role:user" in out and ":'H', " in out


def test_bad_spec_is_a_one_line_error_not_a_traceback(capsys):
    assert main(["positions", "--model", "tiny", "Hi", "--spec", "f2+banana"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("prosv positions: error: cannot parse 'banana'") and "Traceback" not in err
    )


def test_sweep_with_a_bad_config_fails_before_loading_a_model(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"kind": "heatmap", "betas": [1, 1]}))
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("prosv sweep: error: betas has repeated values") and "Traceback" not in err
    )
    assert not (tmp_path / "out").exists()


def test_check_cache_passes_on_tiny(capsys):
    assert (
        main(
            [
                "check-cache",
                "--model",
                "tiny",
                "--spec",
                "f2+l2",
                "all",
                "--layer",
                "1",
                "--alpha",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count(" ok") == 4 and "FAIL" not in out


def test_generate_with_a_saved_vector_and_inspect(tmp_path, capsys):
    tiny = make_tiny_model()
    sv = SteeringVector(torch.randn(tiny.d_model), layer=1, alpha=3.0, model_id=tiny.model_id,
                        chat_template_hash=tiny.chat_template_hash)  # fmt: skip
    save_vector(sv, tmp_path / "v")
    assert (
        main(
            [
                "generate",
                "--model",
                "tiny",
                "Hi",
                "--vector",
                str(tmp_path / "v"),
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert "### Hi" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "v.safetensors")]) == 0
    assert '"positions": "f2+l2"' in capsys.readouterr().out
    (tmp_path / "v.safetensors").write_bytes(b"garbage")
    assert main(["inspect", str(tmp_path / "v")]) == 2
    assert "sha256" in capsys.readouterr().err


def test_models_lists_embedded_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma-3-270m" in out
    assert main(["models", "--convert", "nope"]) == 2


def test_train_from_jsonl_saves_loadable_vectors(tmp_path, capsys):
    rows = [
        {"prompt": f"Tell me about item {i}.", "response": f"Item {i} sits by the deep blue sea."}
        for i in range(6)
    ]
    (tmp_path / "sea.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    argv = ["train", "--model", "tiny", "--jsonl", str(tmp_path / "sea.jsonl"), "--layer", "1",
            "--epochs", "2", "--batch-size", "3", "--out", str(tmp_path / "vecs")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sea: loss" in out and "4 steps" in out
    vec = load_vector(tmp_path / "vecs" / "sea")
    assert vec.info["train_config"]["epochs"] == 2 and str(vec.positions) == "f2+l2"
    assert main(["train", "--model", "tiny", "--layer", "1"]) == 2  # no data source
    assert "exactly one data source" in capsys.readouterr().err
    bf16 = [*argv[:-1], str(tmp_path / "bf16"), "--dtype", "bf16", "--param-dtype", "float32",
            "--logits-budget-mb", "1", "--pad-multiple", "16"]  # fmt: skip
    assert main(bf16) == 0
    capsys.readouterr()
    info = load_vector(tmp_path / "bf16" / "sea").info["train_config"]
    assert (info["param_dtype"], info["logits_budget_mb"], info["pad_multiple"]) == (
        "float32",
        1,
        16,
    )
    for bad, says in ((["--dtype", "int8"], "choose one of float32"),
                      (["--logits-budget-mb", "0"], "logits_budget_mb must be"),
                      (["--pad-multiple", "0"], "pad_multiple must be")):  # fmt: skip
        assert main([*argv[:-1], str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()


def test_analysis_choices_match_the_library():
    from prosv_lens.analysis import ANALYSES
    from prosv_lens.cli import _ANALYSES

    assert tuple(ANALYSES) == _ANALYSES
