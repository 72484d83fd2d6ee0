import json

import pytest
import torch

from prosv_lens.errors import VectorFileError, VectorMismatchError
from prosv_lens.interventions import SteeringVector, run_with_steering
from prosv_lens.models import make_tiny_model
from prosv_lens.prompts import encode_prompts
from prosv_lens.vector_io import _metadata_hash, load_vector, read_metadata, save_vector


def _vector(model, **kw):
    kw = {"layer": 1, "positions": "f2+l2", "alpha": 3.5, **kw}
    return SteeringVector(
        torch.randn(model.d_model), model_id=model.model_id,
        chat_template_hash=model.chat_template_hash, info={"method": "test", "steps": 3}, **kw,
    )  # fmt: skip


def test_round_trip_keeps_everything(tiny, tmp_path):
    sv = _vector(tiny)
    path = save_vector(sv, tmp_path / "vec")
    assert path.name == "vec.safetensors" and (tmp_path / "vec.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "vec.json",
        "vec.safetensors",
    ]  # no temp files
    meta = read_metadata(tmp_path / "vec.json")
    assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["positions"] == "f2+l2"
    assert meta["d_model"] == 32 and meta["model_id"] == tiny.model_id
    assert meta["package_version"] and meta["chat_template_hash"] == tiny.chat_template_hash
    back = load_vector(tmp_path / "vec", tiny)
    assert torch.equal(back.v, sv.v) and torch.equal(back.alpha, sv.alpha)
    assert (back.layer, str(back.positions), back.info) == (
        1,
        "f2+l2",
        {"method": "test", "steps": 3},
    )
    batch = encode_prompts(tiny, ["Hi"])
    assert torch.equal(run_with_steering(tiny, back, batch), run_with_steering(tiny, sv, batch))


def test_other_width_is_always_rejected(tiny, tmp_path):
    wide = make_tiny_model(d_model=48)
    save_vector(_vector(wide), tmp_path / "wide")
    with pytest.raises(VectorMismatchError, match="d_model 48.*d_model 32"):
        load_vector(tmp_path / "wide", tiny)
    with pytest.raises(VectorMismatchError, match="d_model 48"):
        load_vector(tmp_path / "wide", tiny, allow_model_mismatch=True)


def test_other_model_id_needs_explicit_permission(tiny, tmp_path):
    save_vector(_vector(tiny).replace(model_id="someone/else"), tmp_path / "v")
    with pytest.raises(VectorMismatchError, match="made for 'someone/else'.*allow_model_mismatch"):
        load_vector(tmp_path / "v", tiny)
    assert load_vector(tmp_path / "v", tiny, allow_model_mismatch=True).model_id == "someone/else"


def test_other_chat_template_rejected_for_prompt_only_vectors(tiny, tmp_path):
    save_vector(_vector(tiny).replace(chat_template_hash="0123456789abcdef"), tmp_path / "p")
    with pytest.raises(VectorMismatchError, match="chat template 0123456789abcdef"):
        load_vector(tmp_path / "p", tiny)
    save_vector(
        _vector(tiny, positions="all").replace(chat_template_hash="0123456789abcdef"),
        tmp_path / "f",
    )
    assert str(load_vector(tmp_path / "f", tiny).positions) == "all"  # FSSV positions don't move


def test_corrupt_tensor_file(tiny, tmp_path):
    path = save_vector(_vector(tiny), tmp_path / "v")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(VectorFileError, match="does not match the sha256.*re-save"):
        load_vector(path, tiny)


def test_truncated_tensor_file_with_matching_hash(tiny, tmp_path):
    """Even when the JSON is edited to match, an unreadable tensor file is a clear error."""
    path = save_vector(_vector(tiny), tmp_path / "v")
    path.write_bytes(path.read_bytes()[:20])
    meta = json.loads((tmp_path / "v.json").read_text())
    import hashlib

    meta["tensors_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="not a readable steering-vector tensor file"):
        load_vector(path, tiny)


def test_corrupt_or_foreign_json(tiny, tmp_path):
    save_vector(_vector(tiny), tmp_path / "v")
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(VectorFileError, match="not valid JSON"):
        load_vector(tmp_path / "v", tiny)
    (tmp_path / "v.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(VectorFileError, match="not a prosv-lens steering vector"):
        load_vector(tmp_path / "v", tiny)


def test_missing_files(tiny, tmp_path):
    with pytest.raises(VectorFileError, match="v.json not found"):
        load_vector(tmp_path / "v", tiny)
    save_vector(_vector(tiny), tmp_path / "v")
    (tmp_path / "v.safetensors").unlink()
    with pytest.raises(VectorFileError, match="v.safetensors not found"):
        load_vector(tmp_path / "v", tiny)


def test_bad_metadata_is_a_file_error(tiny, tmp_path):
    save_vector(_vector(tiny), tmp_path / "v")
    meta = json.loads((tmp_path / "v.json").read_text())
    meta["positions"] = "f2+banana"
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="edited after saving"):
        load_vector(tmp_path / "v")
    meta["metadata_sha256"] = _metadata_hash(meta)  # a consistent file with a bad spec
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="invalid metadata.*banana"):
        load_vector(tmp_path / "v")
