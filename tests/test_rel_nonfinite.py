"""Reliability class 1: NaN and infinite numbers are refused where they enter.

Vectors (construction, in-place edits, saving, loading, scaling), generation settings and the
CLI's numeric options.
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from prosv_lens.cli import main
from prosv_lens.errors import ConfigError, VectorFileError
from prosv_lens.generation import GenerationConfig
from prosv_lens.interventions import SteeringVector, run_with_steering
from prosv_lens.prompts import encode_prompts
from prosv_lens.vector_io import _metadata_hash, _sha256, load_vector, save_vector

BAD = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("bad", BAD)
def test_a_vector_with_a_non_finite_alpha_or_v_cannot_be_made(tiny, bad):
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        SteeringVector(torch.ones(tiny.d_model), layer=0, alpha=bad)
    v = torch.ones(tiny.d_model)
    v[3] = bad
    with pytest.raises(ConfigError, match="1 non-finite value"):
        SteeringVector(v, layer=0)
    with pytest.raises(ConfigError, match="scale factor must be a finite number"):
        SteeringVector(torch.ones(tiny.d_model), layer=0).scaled(bad)


def test_a_vector_edited_in_place_to_nan_does_not_steer_or_save(tiny, tmp_path):
    vec = SteeringVector(torch.ones(tiny.d_model), layer=0, alpha=1.0)
    with torch.no_grad():
        vec.alpha.fill_(math.nan)
    batch = encode_prompts(tiny, ["Hi there"])
    with pytest.raises(ConfigError, match="alpha \\* v has"):
        run_with_steering(tiny, vec, batch)
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        save_vector(vec, tmp_path / "v")
    assert not list(tmp_path.iterdir())


def test_a_nan_alpha_in_a_saved_file_is_refused(tiny, tmp_path):
    save_vector(SteeringVector(torch.ones(tiny.d_model), layer=0, alpha=2.0), tmp_path / "v")
    tensors = load_file(tmp_path / "v.safetensors")
    tensors["alpha"] = torch.tensor(math.nan)
    save_file(tensors, tmp_path / "v.safetensors")
    meta = json.loads((tmp_path / "v.json").read_text())
    meta["tensors_sha256"] = _sha256(tmp_path / "v.safetensors")  # a consistently forged file
    meta["metadata_sha256"] = _metadata_hash(meta)
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="alpha or v holds NaN/inf"):
        load_vector(tmp_path / "v", tiny)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": math.nan}, {"temperature": -1.0}, {"temperature": math.inf},
     {"top_p": math.nan}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0},
     {"seed": -1}],
)  # fmt: skip
def test_generation_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        GenerationConfig(do_sample=True, **kwargs)


@pytest.mark.parametrize(
    "flags",
    [["--scale", "nan"], ["--scale", "inf"], ["--temperature", "-1"], ["--temperature", "nan"],
     ["--top-p", "nan"], ["--max-new-tokens", "-3"]],
)  # fmt: skip
def test_generate_refuses_non_finite_and_negative_numbers(tiny, tmp_path, capsys, flags):
    save_vector(
        SteeringVector(torch.ones(tiny.d_model), layer=0, model_id=tiny.model_id), tmp_path / "v"
    )
    argv = ["generate", "Hi", "--model", "tiny", "--vector", str(tmp_path / "v"), *flags]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusal of a malformed number
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
