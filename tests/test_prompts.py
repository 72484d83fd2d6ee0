import pytest
import torch

from prosv_lens.errors import PromptError
from prosv_lens.prompts import encode_prompts

PROMPTS = ["Name three colors.", "Hi", "Write a haiku about autumn leaves."]


def test_single_bos_and_chat_template(tiny):
    b = encode_prompts(tiny, ["Hi"])
    ids = b.input_ids[0].tolist()
    bos = tiny.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos
    assert (
        b.texts[0]
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tiny.tokenizer.decode(ids) == b.texts[0]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_masks_and_positions(tiny, side):
    b = encode_prompts(tiny, PROMPTS, padding_side=side)
    lengths = [len(encode_prompts(tiny, [p]).input_ids[0]) for p in PROMPTS]
    assert b.prompt_lengths == lengths == b.attention_mask.sum(1).tolist()
    for i, n in enumerate(lengths):
        real = b.attention_mask[i].nonzero().flatten()
        expected = range(b.n_pos - n, b.n_pos) if side == "left" else range(n)
        assert real.tolist() == list(expected)
        assert b.position_ids[i, real].tolist() == list(range(n))
    assert torch.equal(b.prompt_mask, b.attention_mask.bool())


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_compute_what_they_compute_alone(tiny, side):
    b = encode_prompts(tiny, PROMPTS, padding_side=side)
    logits = tiny.bridge(b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids)
    for i, p in enumerate(PROMPTS):
        alone = tiny.bridge(encode_prompts(tiny, [p]).input_ids)[0]
        real = b.attention_mask[i].bool()
        assert (logits[i, real] - alone).abs().max() <= 1e-5


def _span_texts(model, batch, i):
    ids = batch.input_ids[i]
    return {
        r: [model.tokenizer.decode(ids[s:e]) for s, e in spans]
        for r, spans in batch.role_spans[i].items()
    }


def test_role_spans_default_and_explicit_system(tiny):
    b = encode_prompts(tiny, ["Name three colors.", "Hi"], padding_side="left")
    assert _span_texts(tiny, b, 1) == {
        "system": ["Be brief."], "user": ["Hi"], "assistant": ["<|im_start|>assistant\n"],
    }  # fmt: skip
    b = encode_prompts(tiny, ["Hi"], system="Talk like a pirate.")
    assert _span_texts(tiny, b, 0)["system"] == ["Talk like a pirate."]


def test_message_lists_and_multi_turn(tiny):
    conv = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    b = encode_prompts(tiny, [conv])
    assert _span_texts(tiny, b, 0)["user"] == ["Hi", "Bye"]
    assert b.texts[0].endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")


def test_plain_text_without_chat_template(tiny):
    b = encode_prompts(tiny, ["Hello world"], chat_template=False)
    assert b.texts == ("Hello world",)
    assert _span_texts(tiny, b, 0) == {"user": ["Hello world"]}


@pytest.mark.parametrize(
    ("prompts", "kwargs", "match"),
    [
        ([], {}, "no prompts"),
        (["ok", ""], {}, "prompt 1 is empty"),
        (["ok"], {"padding_side": "middle"}, "padding_side"),
        (
            [[{"role": "user", "content": "x"}]],
            {"chat_template": False},
            "no chat template is in use",
        ),
        ([[{"content": "x"}]], {}, "'role' and 'content'"),
    ],
)
def test_bad_prompts_are_clear_errors(tiny, prompts, kwargs, match):
    with pytest.raises(PromptError, match=match):
        encode_prompts(tiny, prompts, **kwargs)
