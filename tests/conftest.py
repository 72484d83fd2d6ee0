"""Shared fixtures: a tiny random model (fast, mechanics), real models (slow), hook-leak guard."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from prosv_lens.interventions import active_hook_count
from prosv_lens.models import LoadedModel, load_model, make_tiny_model

_LOADED: list[LoadedModel] = []


def _track(model: LoadedModel) -> LoadedModel:
    _LOADED.append(model)
    return model


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return _track(make_tiny_model())


@pytest.fixture(scope="session")
def smol() -> LoadedModel:
    """SmolLM2-135M-Instruct from the embedded GGUF, fp32 (converted once into the cache)."""
    return _track(load_model("smollm2-135m-instruct", device="cpu"))


@pytest.fixture(scope="session")
def smol64() -> LoadedModel:
    """The same weights in float64: equivalence checks free of fp32 reduction-order noise."""
    return _track(load_model("smollm2-135m-instruct", device="cpu", dtype=torch.float64))


@pytest.fixture(scope="session")
def gemma64() -> LoadedModel:
    """Gemma-3-270m base from the embedded GGUF, in float64 (converted once, ~70 s)."""
    return _track(load_model("gemma-3-270m", device="cpu", dtype=torch.float64))


@pytest.fixture(autouse=True)
def _seed_and_no_leaked_hooks():
    torch.manual_seed(0)
    yield
    leaked = {m.model_id: active_hook_count(m) for m in _LOADED if active_hook_count(m)}
    for m in _LOADED:
        m.bridge.reset_hooks()
    assert not leaked, f"hooks left attached after the test: {leaked}"
