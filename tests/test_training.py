import math

import pytest
import torch
from _shared import fast_and_full_grads

from prosv_lens.concepts import ConceptData
from prosv_lens.directions import resid_post
from prosv_lens.errors import PositionSpecError, RunMismatchError, TrainingDivergedError
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts
from prosv_lens.training import TrainConfig, response_loss, train
from prosv_lens.training.fastpath import build_residual_cache
from prosv_lens.training.forward import gather_rows
from prosv_lens.training.objectives import SequenceLogprobs, simpo_loss
from prosv_lens.training.trainer import (
    ACTIVATION_CAP_BYTES,
    default_micro_rows,
    step_bytes_per_token,
)


def _concept(name, n=10, offset=0):
    return ConceptData(
        name,
        tuple(f"Tell me about item {i + offset}." for i in range(n)),
        tuple(f"The sea near item {i + offset} is deep blue, salty and wide." for i in range(n)),
        tuple(f"Item {i + offset} is fine." for i in range(n)),
    )


SEA, SKY = _concept("sea"), _concept("sky", n=7, offset=50)
FAST = {"epochs": 2, "batch_size": 4}


@pytest.mark.parametrize("spec", ["f2+l2", "all", "role:user"])
def test_fast_path_matches_full_model_hook_path(tiny, spec):
    layer = 1
    batch = encode_prompts(
        tiny, list(SEA.prompts[:4]), padding_side="right", responses=list(SEA.responses[:4])
    )
    mask = PositionSpec.parse(spec).resolve(batch).mask
    rows = gather_rows([batch], [mask], [(0, 3), (0, 0), (0, 2)])
    fast, full = fast_and_full_grads(tiny, batch, rows, layer, 5.0, 0.3 * torch.randn(tiny.d_model))
    for a, b in zip(fast, full, strict=True):
        assert (a - b).norm() <= 1e-5 * b.norm()
    assert float(full[1].abs()) > 0 and float(full[2].norm()) > 0
    assert all(p.grad is None for p in tiny.bridge.parameters())


def test_training_moves_alpha_and_v_and_never_the_model(tiny):
    before = [p.detach().clone() for p in tiny.bridge.parameters()]
    cfg = TrainConfig.prosv(1, **FAST)
    result = train(tiny, SEA, cfg, progress=False)
    vec, log = result.vectors["sea"], result.logs["sea"]
    assert len(log) == result.steps == 2 * math.ceil(10 / 4)
    assert math.isclose(
        log[0]["alpha"], 4 * math.sqrt(32), rel_tol=0.5
    )  # moved from alpha0 = beta*sqrt(d)
    init_v_bound = 8 / math.sqrt(32)
    assert float(vec.alpha) != 4 * math.sqrt(32) and float(vec.v.abs().max()) != init_v_bound
    assert all(torch.equal(a, b) for a, b in zip(before, tiny.bridge.parameters(), strict=True))
    assert all(p.grad is None and not p.requires_grad for p in tiny.bridge.parameters())
    assert vec.info["train_config"] == cfg.to_dict() and vec.info["train_log"] == log
    assert (str(vec.positions), vec.layer, vec.model_id) == ("f2+l2", 1, tiny.model_id)
    assert (
        log[-1]["lr_v"] < log[0]["lr_v"] and log[0]["lr_alpha"] == 10.0
    )  # linear decay, no warm-up


def test_seeded_runs_repeat_bit_for_bit(tiny):
    cfg = TrainConfig.fssv(1, **FAST)
    a, b = (train(tiny, SEA, cfg, progress=False).vectors["sea"] for _ in range(2))
    c = train(tiny, SEA, cfg.replace(seed=7), progress=False).vectors["sea"]
    assert torch.equal(a.v, b.v) and torch.equal(a.alpha, b.alpha)
    assert not torch.equal(a.v, c.v)


def test_concepts_trained_together_equal_each_trained_alone(tiny):
    cfg = TrainConfig.prosv(1, **FAST)
    together = train(tiny, [SEA, SKY], cfg, progress=False).vectors
    for data in (SEA, SKY):
        alone = train(tiny, data, cfg, progress=False).vectors[data.name]
        assert torch.allclose(together[data.name].v, alone.v, rtol=1e-4, atol=1e-5)
        assert torch.allclose(together[data.name].alpha, alone.alpha, rtol=1e-4, atol=1e-5)


def test_clipping_touches_v_only(tiny):
    """With SGD the step is the gradient: a tiny clip freezes v but not alpha."""
    base = TrainConfig.prosv(1, epochs=1, batch_size=10, optimizer="sgd", lr_v=1.0, lr_alpha=1.0)
    free = train(tiny, SEA, base.replace(clip_v=None), progress=False)
    clipped = train(tiny, SEA, base.replace(clip_v=1e-9), progress=False)
    v0 = (
        train(tiny, SEA, base.replace(lr_v=1e-30, lr_alpha=1e-30, clip_v=None), progress=False)
        .vectors["sea"]
        .v
    )
    assert (clipped.vectors["sea"].v - v0).norm() <= 1e-8
    assert (free.vectors["sea"].v - v0).norm() > 1e-3
    assert clipped.vectors["sea"].alpha == free.vectors["sea"].alpha
    assert (
        clipped.logs["sea"][0]["grad_norm_v"] == free.logs["sea"][0]["grad_norm_v"] > 1e-9
    )  # logged pre-clip


def test_killed_run_resumes_identically(tiny, tmp_path):
    cfg = TrainConfig.prosv(1, epochs=3, batch_size=4)
    straight = train(tiny, [SEA, SKY], cfg, progress=False)

    def kill_at_step_4(step, rows):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            tiny,
            [SEA, SKY],
            cfg,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
            callbacks=[kill_at_step_4],
            progress=False,
        )
    resumed = train(
        tiny, [SEA, SKY], cfg, checkpoint_dir=tmp_path, checkpoint_every=2, progress=False
    )
    assert resumed.steps == straight.steps - 4  # restarted from the step-4 checkpoint
    for name in ("sea", "sky"):
        assert torch.equal(resumed.vectors[name].v, straight.vectors[name].v)
        assert torch.equal(resumed.vectors[name].alpha, straight.vectors[name].alpha)
        assert resumed.logs[name] == straight.logs[name]
    with pytest.raises(RunMismatchError, match="settings.seed 42 -> 1"):
        train(tiny, [SEA, SKY], cfg.replace(seed=1), checkpoint_dir=tmp_path, progress=False)


def test_variants(tiny):
    fixed = train(tiny, SEA, TrainConfig.prosv(1, variant="fixed_alpha", **FAST), progress=False)
    assert float(fixed.vectors["sea"].alpha) == 1.0 and all(
        r["grad_alpha"] == 0 for r in fixed.logs["sea"]
    )
    unit = train(tiny, SEA, TrainConfig.prosv(1, variant="unit", **FAST), progress=False)
    assert abs(float(unit.vectors["sea"].v.norm()) - 1) < 1e-5
    sgd = train(tiny, SEA, TrainConfig.prosv(1, optimizer="sgd", **FAST), progress=False)
    assert sgd.vectors["sea"].info["train_config"]["optimizer"] == "sgd"


def test_simpo_objective(tiny):
    win = SequenceLogprobs(torch.tensor([-5.0, -50.0]), torch.tensor([5.0, 5.0]))
    lose = SequenceLogprobs(torch.tensor([-50.0, -5.0]), torch.tensor([5.0, 5.0]))
    # Reference prefers the winner: the weight max(ref_l - ref_w, 1) is 1, plain SimPO.
    loss = simpo_loss(
        win, lose, ref_winner=torch.tensor([-10.0, -10.0]), ref_loser=torch.tensor([-60.0, -60.0])
    )
    assert loss[0] < 1e-3 and abs(float(loss[1]) - 9.0) < 1e-3  # -log sigmoid(-9)
    # Reference prefers the loser by 50 nats: the winner's term is weighted by 50 (RePS scaling).
    scaled = simpo_loss(
        win, lose, ref_winner=torch.tensor([-60.0, -60.0]), ref_loser=torch.tensor([-10.0, -10.0])
    )
    expected = -torch.nn.functional.logsigmoid(torch.tensor(50 * -1.0 - (-10.0)))
    assert torch.isclose(scaled[0], expected)
    result = train(tiny, SEA, TrainConfig.prosv(1, objective="simpo", **FAST), progress=False)
    assert all(math.isfinite(r["loss"]) for r in result.logs["sea"])
    no_negatives = ConceptData("x", SEA.prompts, SEA.responses)
    with pytest.raises(ValueError, match="needs one neutral response per prompt"):
        train(tiny, no_negatives, TrainConfig.prosv(1, objective="simpo"), progress=False)


def test_training_lowers_the_training_loss(tiny):
    before = response_loss(tiny, SEA, None, layer=1).mean()
    for cfg, gain in [
        (TrainConfig.fssv(1, epochs=8, batch_size=5), 0.5),
        (TrainConfig.prosv(1, epochs=8, batch_size=5), 0.05),
    ]:
        vec = train(tiny, SEA, cfg, progress=False).vectors["sea"]
        assert response_loss(tiny, SEA, vec, layer=1).mean() < before - gain, cfg.positions


def test_nan_or_exploding_loss_stops_the_run(tiny, monkeypatch):
    from prosv_lens.training import trainer

    real = trainer.lang_loss
    monkeypatch.setattr(trainer, "lang_loss", lambda seq: real(seq) * float("nan"))
    with pytest.raises(
        TrainingDivergedError,
        match=r"step 0 \(epoch 0\), concept 'sea': loss is nan.*lr_alpha=10.0.*Lower",
    ):
        train(tiny, SEA, TrainConfig.prosv(1), progress=False)
    calls = []

    def explode_later(seq):
        calls.append(1)
        return real(seq) * (1e6 if len(calls) > 2 else 1.0)

    monkeypatch.setattr(trainer, "lang_loss", explode_later)
    with pytest.raises(TrainingDivergedError, match="step 2 .*first step"):
        train(tiny, SEA, TrainConfig.prosv(1, batch_size=4), progress=False)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: TrainConfig.prosv(3), ValueError, "layer 3 is out of range.*0..2"),
        (
            lambda: TrainConfig.prosv(1, positions="f500"),
            PositionSpecError,
            "'f500' needs at least 500",
        ),
    ],
)
def test_bad_settings_fail_clearly(tiny, make, error, match):
    with pytest.raises(error, match=match):
        train(tiny, SEA, make(), progress=False)


def test_empty_data_and_bad_config_values(tiny):
    with pytest.raises(ValueError, match="no training data"):
        train(tiny, [], TrainConfig.prosv(1), progress=False)
    with pytest.raises(ValueError, match="one response per prompt"):
        train(tiny, ConceptData("e", (), ()), TrainConfig.prosv(1), progress=False)
    for bad in ({"objective": "dpo"}, {"beta": float("nan")}, {"variant": "x"}, {"clip_v": 0.0}):
        with pytest.raises(ValueError, match="bad TrainConfig"):
            TrainConfig(layer=1, **bad)


def test_residual_cache_streams_to_disk_when_over_budget(tiny, tmp_path):
    cfg = TrainConfig.prosv(1, **FAST)
    in_memory = train(tiny, [SEA, SKY], cfg, progress=False).vectors
    seen = []

    def spy(step, rows):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    on_disk = train(
        tiny,
        [SEA, SKY],
        cfg,
        progress=False,
        cache_budget_bytes=1,
        cache_dir=tmp_path,
        callbacks=[spy],
    ).vectors
    assert len(seen[0]) == 2 and all(
        n.startswith("prosv-resid-L1-") for n in seen[0]
    )  # one file per dataset
    assert list(tmp_path.iterdir()) == []  # deleted at the end
    for name in ("sea", "sky"):
        assert torch.equal(in_memory[name].v, on_disk[name].v)


def test_micro_batches_give_the_same_vectors(tiny):
    cfg = TrainConfig.prosv(1, **FAST)
    whole = train(tiny, [SEA, SKY], cfg, progress=False, micro_rows=64).vectors
    small = train(tiny, [SEA, SKY], cfg, progress=False, micro_rows=3).vectors
    for name in ("sea", "sky"):
        assert torch.allclose(whole[name].v, small[name].v, rtol=1e-4, atol=1e-5)
        assert torch.allclose(whole[name].alpha, small[name].alpha, rtol=1e-4, atol=1e-5)


def test_residual_cache_skips_padding_but_keeps_every_real_token(tiny):
    """Length-sorted chunks cut to their own width give each example's residual exactly as one
    padded pass over the whole batch does; the cache lives on the model's device."""
    prompts = ["Hi", "Write a long poem about the sea and the sky.", "Name three colours.", "Ok"]
    responses = ["Yes.", "The sea is wide and the sky is high above it all.", "Red.", "Sure, fine."]
    batch = encode_prompts(tiny, prompts, padding_side="right", responses=responses)
    whole = resid_post(tiny, batch.input_ids, batch.attention_mask, 1)
    cache = build_residual_cache(tiny, batch, 1, chunk=2)
    assert cache.storage.device == tiny.device
    lengths = batch.attention_mask.sum(dim=1).tolist()
    assert len(set(lengths)) == len(lengths)  # the chunks really are cut to different widths
    got = cache.padded(range(len(prompts)), batch.input_ids.shape[1], tiny.device)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(got[i, :n], whole[i, :n], rtol=1e-5, atol=1e-5)
        assert not got[i, n:].any()  # padding stays zero


def test_default_micro_rows_fill_an_accelerator_within_its_memory(tiny):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert default_micro_rows(cpu, tokens_per_row=256, bytes_per_token=1 << 20) == 8
    # Estimates by step_bytes_per_token's rule (blocks x (12 d_model + 4 d_mlp + 3 heads x pos)).
    # SmolLM2 fp32 at layer 12 (17 of 30 blocks of 576 / 1536 / 9 heads) on an H200 (~139 GB
    # free), fast path with a 1 GiB logits budget: the activations are capped at 12 GiB whatever
    # the free memory (a step peaks near weights + 16 GB), which still holds 32 rows of 256 tokens.
    smol = 17 * (12 * 576 + 4 * 1536 + 3 * 9 * 256) * 4
    rows = default_micro_rows(
        gpu, tokens_per_row=256, bytes_per_token=smol, reserved_bytes=1 << 30, free_bytes=139 << 30
    )
    assert rows >= 32 and rows * 256 * smol + (1 << 30) <= ACTIVATION_CAP_BYTES
    assert ACTIVATION_CAP_BYTES == 12 << 30
    # Gemma-2-2B bf16 at layer 10 (15 of 26 blocks of 2304 / 9216 / 8 heads): rows shrink with the
    # free memory, never below 8; the 256k vocabulary costs one logits chunk, not a row's worth.
    gemma = 15 * (12 * 2304 + 4 * 9216 + 3 * 8 * 256) * 2
    mid = default_micro_rows(
        gpu, tokens_per_row=256, bytes_per_token=gemma, reserved_bytes=1 << 30, free_bytes=80 << 30
    )
    assert 8 < mid < 96 and mid * 256 * gemma + (1 << 30) <= (80 << 30) // 4
    low = default_micro_rows(
        gpu, tokens_per_row=256, bytes_per_token=gemma, reserved_bytes=1 << 30, free_bytes=16 << 30
    )
    assert low == 8
    # The rule itself, on the tiny model: the full path adds fp32 logits per token, the fast path
    # runs only the blocks above the layer.
    fast = step_bytes_per_token(tiny, 1, path="fast", tokens_per_row=64)
    full = step_bytes_per_token(tiny, 1, path="full", tokens_per_row=64)
    assert fast == 1 * (12 * 32 + 4 * 64 + 3 * 4 * 64) * 4
    assert full == 3 * (12 * 32 + 4 * 64 + 3 * 4 * 64) * 4 + 16 * tiny.bridge.cfg.d_vocab


def test_resume_ignores_speed_only_settings_but_not_numerics(tiny, tmp_path):
    cfg = TrainConfig.prosv(1, epochs=2, batch_size=4)
    straight = train(tiny, SEA, cfg, progress=False)
    stop = []

    def kill_at_step_2(step, rows):
        if step == 2:
            stop.append(step)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny, SEA, cfg, checkpoint_dir=tmp_path, checkpoint_every=1,
              callbacks=[kill_at_step_2], progress=False)  # fmt: skip
    with pytest.raises(
        RunMismatchError, match="settings.param_dtype"
    ):  # the authors' bf16-parameter mode
        train(tiny, SEA, cfg.replace(param_dtype="model"), checkpoint_dir=tmp_path, progress=False)
    resumed = train(tiny, SEA, cfg.replace(logits_budget_mb=1, pad_multiple=8),
                    checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    assert stop == [2] and resumed.steps == straight.steps - 3
    assert torch.allclose(resumed.vectors["sea"].v, straight.vectors["sea"].v, atol=1e-6)
