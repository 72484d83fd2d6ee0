"""Keeping a device busy, proven exact: padded widths that repeat across steps, and compiled
upper blocks, each give the trainer's loss and gradients of the plain eager path."""

import pytest
import torch
from _shared import SEA8 as DATA
from _shared import first_step_grads

from prosv_lens.errors import ProsvError
from prosv_lens.models import make_tiny_model
from prosv_lens.training import TrainConfig, train
from prosv_lens.training.forward import gather_rows
from prosv_lens.training.trainer import _Runner

# Dynamo reads a non-leaf tensor's .grad while tracing; harmless, but pytest makes every warning
# an error.
_DYNAMO_GRAD_WARNING = "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning"


def _close(a, b, rtol):
    for x, y in zip(a[:3], b[:3], strict=True):
        assert torch.allclose(x, y, rtol=rtol, atol=rtol * float(y.abs().max())), (x, y)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
@pytest.mark.parametrize("positions", ["f2+l2", "all"])
def test_padding_widths_to_a_multiple_changes_nothing(arch, positions):
    model = make_tiny_model(arch=arch)
    plain = first_step_grads(
        model, TrainConfig.prosv(1, positions=positions, batch_size=8, pad_multiple=1)
    )
    padded = first_step_grads(
        model, TrainConfig.prosv(1, positions=positions, batch_size=8, pad_multiple=64)
    )
    _close(padded, plain, 1e-6)


def test_padded_widths_repeat_across_steps(tiny):
    runner = _Runner(tiny, [DATA], TrainConfig.prosv(1, batch_size=3, pad_multiple=64))
    assert runner.pad_multiple == 64
    real = {runner.lengths[0][i] for i in range(len(DATA))}
    padded = {
        gather_rows(runner.batches, runner.masks, [(0, i)], pad_multiple=64).input_ids.shape[1]
        for i in range(len(DATA))
    }
    assert all(w % 64 == 0 for w in padded) and len(padded) < len(real)


def test_pad_multiple_defaults_to_none_padding_on_a_cpu(tiny):
    assert _Runner(tiny, [DATA], TrainConfig.prosv(1)).pad_multiple == 1


@pytest.mark.filterwarnings(_DYNAMO_GRAD_WARNING)
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_compiled_upper_blocks_match_eager(arch):
    """aot_eager traces the blocks through dynamo and AOT autograd without generating code:
    the same loss and gradients, bit for bit."""
    torch._dynamo.reset()
    model = make_tiny_model(arch=arch)
    cfg = TrainConfig.prosv(1, batch_size=8, pad_multiple=64)
    eager = first_step_grads(model, cfg)
    compiled = first_step_grads(model, cfg.replace(compile="aot_eager"))
    _close(compiled, eager, 1e-6)
    # the model's own blocks are not replaced: a later eager forward is untouched
    assert not any(
        "Optimized" in type(b).__name__ for b in model.bridge.original_model.get_decoder().layers
    )


@pytest.mark.filterwarnings(_DYNAMO_GRAD_WARNING)
def test_compiled_training_run_equals_eager_run(tiny):
    torch._dynamo.reset()
    cfg = TrainConfig.prosv(1, epochs=2, batch_size=4, pad_multiple=64)
    eager = train(tiny, DATA, cfg, progress=False).logs["sea"]
    compiled = train(tiny, DATA, cfg.replace(compile="aot_eager"), progress=False).logs["sea"]
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-6)
    assert compiled[-1]["alpha"] == pytest.approx(eager[-1]["alpha"], rel=1e-6)


def test_compile_needs_the_fast_path():
    with pytest.raises(ProsvError, match="compile applies to the fast path"):
        TrainConfig.prosv(1, path="full", compile="inductor")


@pytest.mark.parametrize("bad", [0, -64])
def test_bad_pad_multiple_is_refused(bad):
    with pytest.raises(ValueError, match="pad_multiple"):
        TrainConfig.prosv(1, pad_multiple=bad)


def test_fast_path_runs_the_plain_hf_blocks_sharing_the_bridges_weights(tiny):
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    from prosv_lens.training.fastpath import UpperStack

    upper = UpperStack(tiny, 1)
    assert not any(isinstance(m, GeneralizedComponent) for m in upper.blocks.modules())
    bridge_params = {p.data_ptr() for p in tiny.bridge.parameters()}
    assert {p.data_ptr() for p in upper.blocks.parameters()} <= bridge_params
    assert upper.weight.data_ptr() in bridge_params
