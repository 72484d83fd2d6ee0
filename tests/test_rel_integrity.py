"""Reliability class 6: a vector's metadata is covered by the integrity check.

Every field that changes behaviour (layer, hook, positions, alpha, d_model, model id, template)
is bound by ``metadata_sha256``; the JSON must also agree with the tensor file. An edited or
bit-flipped JSON is refused, and ``prosv inspect`` shows what will be used.
"""

import json

import pytest
import torch

from prosv_lens.cli import main
from prosv_lens.errors import OutputError, VectorFileError
from prosv_lens.interventions import SteeringVector
from prosv_lens.vector_io import _metadata_hash, load_vector, save_vector


def _saved(tiny, path, **kw):
    kw = {"layer": 1, "positions": "f2+l2", "alpha": 3.5, **kw}
    vec = SteeringVector(
        torch.randn(tiny.d_model),
        model_id=tiny.model_id,
        chat_template_hash=tiny.chat_template_hash,
        **kw,
    )
    save_vector(vec, path)
    return vec


@pytest.mark.parametrize(
    ("field", "value"),
    [("layer", 0), ("positions", "all"), ("alpha", 350.0), ("model_id", "other"),
     ("chat_template_hash", "0" * 16), ("info", {"method": "forged"})],
)  # fmt: skip
def test_an_edited_field_is_refused(tiny, tmp_path, field, value):
    _saved(tiny, tmp_path / "v")
    meta = json.loads((tmp_path / "v.json").read_text())
    meta[field] = value
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="edited after saving"):
        load_vector(tmp_path / "v", tiny)


def test_a_bit_flip_in_the_json_is_refused(tiny, tmp_path):
    _saved(tiny, tmp_path / "v", layer=2)
    raw = bytearray((tmp_path / "v.json").read_bytes())
    i = raw.index(b'"layer": 2') + len(b'"layer": ')
    raw[i] ^= 0x03  # '2' -> '1'
    (tmp_path / "v.json").write_bytes(bytes(raw))
    with pytest.raises(VectorFileError, match="edited after saving"):
        load_vector(tmp_path / "v", tiny)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("alpha", 7.0, "alpha 7.0 but the tensor file holds 3.5"),
     ("hook_name", "blocks.0.hook_resid_post", "layer 1 and hook_name"),
     ("d_model", 7, "d_model 7 but v has")],
)  # fmt: skip
def test_a_self_contradicting_file_is_refused_even_with_a_matching_hash(
    tiny, tmp_path, field, value, message
):
    """An editor who also recomputes the hash still cannot make the JSON say one thing while
    the tensors do another."""
    _saved(tiny, tmp_path / "v")
    meta = json.loads((tmp_path / "v.json").read_text())
    meta[field] = value
    meta["metadata_sha256"] = _metadata_hash(meta)
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match=message):
        load_vector(tmp_path / "v", tiny)


def test_format_1_files_are_read_with_the_consistency_checks(tiny, tmp_path):
    vec = _saved(tiny, tmp_path / "v")
    meta = json.loads((tmp_path / "v.json").read_text())
    meta["format_version"] = 1
    del meta["metadata_sha256"]
    (tmp_path / "v.json").write_text(json.dumps(meta))
    assert torch.equal(load_vector(tmp_path / "v", tiny).v, vec.v)
    meta["alpha"] = 9.0
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(VectorFileError, match="contradicts its tensor file"):
        load_vector(tmp_path / "v", tiny)


def test_inspect_shows_what_will_be_used_and_refuses_an_edited_file(tiny, tmp_path, capsys):
    _saved(tiny, tmp_path / "v", layer=2, positions="l3", alpha=4.25)
    assert main(["inspect", str(tmp_path / "v")]) == 0
    out = capsys.readouterr().out
    assert "edits:    blocks.2.hook_resid_post at positions 'l3' (prompt-only)" in out
    assert "alpha 4.25" in out and "metadata sha256 verified" in out
    meta = json.loads((tmp_path / "v.json").read_text())
    meta["layer"] = 0
    (tmp_path / "v.json").write_text(json.dumps(meta))
    assert main(["inspect", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "edited after saving" in err and err.count("\n") == 1


def test_saving_never_replaces_an_existing_vector_unless_asked(tiny, tmp_path):
    first = _saved(tiny, tmp_path / "v")
    before = (tmp_path / "v.json").read_bytes()
    with pytest.raises(OutputError, match="already exists.*overwrite=True"):
        save_vector(first.scaled(2.0), tmp_path / "v")
    assert (tmp_path / "v.json").read_bytes() == before
    save_vector(first.scaled(2.0), tmp_path / "v", overwrite=True)
    assert float(load_vector(tmp_path / "v", tiny).alpha) == 7.0
