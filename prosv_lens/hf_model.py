"""Stage 1b — the plain Hugging Face model under a TransformerLens bridge.

TransformerLens's ``TransformerBridge`` replaces the Hugging Face modules in place with its own
wrappers (a hook point per sub-module, its own eager attention). Work that needs no hook points
— the trainer's blocks above the steering layer, batched generation for judging — runs faster on
the plain modules. :func:`hf_causal_lm` recovers them as a new module tree whose every module is
the Hugging Face module the bridge wraps: shallow copies, so every parameter and buffer is the
bridge's own tensor (no weight is copied or changed) and hooks registered on the new tree never
reach the bridge. On the tiny Llama, Qwen2, Gemma-2 and Gemma-3 checkpoints its layers give
bit-identical outputs to the bridge's (``tests/test_hf_generation.py``,
``tests/test_shapes_and_compile.py``).
"""

import copy
from typing import Any

from torch import nn
from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
from transformers import GenerationConfig as HFGenerationConfig
from transformers import PretrainedConfig, PreTrainedModel

from prosv_lens.errors import ProsvError
from prosv_lens.models import LoadedModel


def hf_causal_lm(model: LoadedModel) -> PreTrainedModel:
    """The Hugging Face ``*ForCausalLM`` under ``model.bridge``, without TransformerLens's wrappers.

    Every parameter and buffer is the bridge's own tensor (nothing is copied; building the view
    takes milliseconds). The returned modules start with no hooks, and hooks registered on them
    do not reach the bridge.

    Raises:
        ProsvError: the bridge runs in TransformerLens's compatibility mode (its processed weights
            no longer match the Hugging Face modules), or a wrapper could not be removed.
    """
    bridge = model.bridge
    if getattr(bridge, "compatibility_mode", False):
        raise ProsvError(
            f"{model.model_id} runs in TransformerLens compatibility mode, whose processed weights "
            "the Hugging Face modules do not hold: generate with backend='bridge'."
        )
    memo: dict[int, Any] = {}
    hf = _unwrapped(bridge.original_model, memo)
    left = sorted({type(m).__name__ for m in hf.modules() if isinstance(m, GeneralizedComponent)})
    if left or not isinstance(hf, PreTrainedModel):
        raise ProsvError(
            f"could not recover the plain Hugging Face model of {model.model_id} (TransformerLens "
            f"modules left: {left or 'none'}): generate with backend='bridge'."
        )
    hf.generation_config = HFGenerationConfig()
    return hf


def _unwrapped(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A shallow copy of ``module``'s Hugging Face tree with every TransformerLens wrapper replaced
    by the module it wraps; shared sub-modules and configs stay shared (``memo``)."""
    while isinstance(module, GeneralizedComponent) and module.original_component is not None:
        module = module.original_component
    if id(module) in memo:
        return memo[id(module)]
    if "forward" in module.__dict__:  # e.g. accelerate's offloading wraps forward per instance
        raise ProsvError(
            f"{type(module).__name__} has a per-instance forward (device_map offloading?), which a "
            "copy cannot carry over: generate with backend='bridge'."
        )
    clone = copy.copy(module)
    memo[id(module)] = clone
    # The copy shares the original's dicts: give it its own buffers and no hooks, so that
    # registering a hook on the copy never touches the bridge's module. Hugging Face's lazily
    # installed output-capturing hooks are dropped with the rest; unset their flag so that
    # transformers installs them on the copy if it is ever asked for hidden states.
    clone._buffers = type(module._buffers)(module._buffers)
    for key, value in module.__dict__.items():
        if key.startswith("_") and "hooks" in key and isinstance(value, dict):
            clone.__dict__[key] = type(value)()
    clone.__dict__.pop("_output_capturing_hooks_installed", None)
    for key, value in module.__dict__.items():
        if isinstance(value, PretrainedConfig):
            clone.__dict__[key] = _quiet(value, memo)
    clone._modules = {
        name: None if child is None else _unwrapped(child, memo)
        for name, child in module._modules.items()
    }
    return clone


def _quiet(config: PretrainedConfig, memo: dict[int, Any]) -> PretrainedConfig:
    """A copy of ``config`` that collects no attention weights or hidden states. TransformerLens
    sets ``output_attentions`` on the model's config, which would make every forward pass of the
    plain model gather all layers' attention weights."""
    if id(config) not in memo:
        memo[id(config)] = copy.copy(config)
        memo[id(config)].output_attentions = False
        memo[id(config)].output_hidden_states = False
    return memo[id(config)]
