"""Inputs beyond what the model can take are refused, naming the row, never run silently.

The tiny model's context is 512 tokens and its tokenizer is character-level, so a prompt of ``k``
letters is ``OVERHEAD + k`` tokens with the chat template around it.
"""

import pytest
import torch

from prosv_lens.errors import PromptError
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.prompts import encode_prompts


@pytest.fixture
def overhead(tiny) -> int:
    """Tokens the chat template adds around a string prompt."""
    return len(encode_prompts(tiny, ["a"]).input_ids[0]) - 1


@pytest.fixture
def no_forward(tiny, monkeypatch):
    """Any forward pass of the bridge fails the test: refusals must come before the work."""

    def boom(*args, **kwargs):
        raise AssertionError("the model ran a forward pass on an input it should have refused")

    monkeypatch.setattr(type(tiny.bridge), "forward", boom)


def _prompt_of(tiny, overhead: int, n_tokens: int) -> str:
    """A string prompt that encodes to exactly ``n_tokens`` tokens with the template."""
    text = "a" * (n_tokens - overhead)
    assert len(encode_prompts(tiny.tokenizer, [text]).input_ids[0]) == n_tokens
    return text


def test_prompt_longer_than_the_context_is_refused_naming_it(tiny, overhead, no_forward):
    assert tiny.n_ctx == 512 == tiny.bridge.cfg.n_ctx
    prompts = ["Hi", _prompt_of(tiny, overhead, tiny.n_ctx + 1)]
    with pytest.raises(PromptError, match=r"prompt 1 has 513 tokens, more than .* context of 512"):
        encode_prompts(tiny, prompts)
    with pytest.raises(PromptError, match=r"prompt 1 has 513 tokens"):
        generate(tiny, prompts, (), GenerationConfig(max_new_tokens=1))
    # The boundary: exactly n_ctx tokens is accepted.
    batch = encode_prompts(tiny, ["Hi", _prompt_of(tiny, overhead, tiny.n_ctx)])
    assert batch.attention_mask.sum(dim=1).tolist()[1] == tiny.n_ctx


@pytest.mark.parametrize("backend", ["bridge", "hf"])
def test_prompt_plus_new_tokens_beyond_the_context_is_refused_before_any_work(
    tiny, overhead, no_forward, backend
):
    prompt = _prompt_of(tiny, overhead, tiny.n_ctx - 10)
    cfg = GenerationConfig(max_new_tokens=11, backend=backend)
    with pytest.raises(PromptError, match=r"prompt 0 has 502 tokens and max_new_tokens=11 .* 513"):
        generate(tiny, [prompt], (), cfg)
    # A batch encoded with the bare tokenizer (no length check there) is caught by generate.
    batch = encode_prompts(tiny.tokenizer, ["Hi", prompt + "a" * 20])
    with pytest.raises(PromptError, match=r"prompt 1 has 522 tokens .*: shorten the prompt"):
        generate(tiny, batch, (), GenerationConfig(max_new_tokens=1, backend=backend))


def test_prompt_plus_new_tokens_exactly_at_the_context_is_generated(tiny, overhead):
    prompt = _prompt_of(tiny, overhead, tiny.n_ctx - 3)
    with pytest.raises(PromptError, match=r"lower max_new_tokens to 3 or shorten the prompt"):
        generate(tiny, ["Hi", prompt], (), GenerationConfig(max_new_tokens=4))
    out = generate(tiny, ["Hi", prompt], (), GenerationConfig(max_new_tokens=3))
    assert out.tokens.shape == (2, 3)


def test_prompt_plus_response_beyond_the_context_is_refused(tiny, overhead):
    prompt = _prompt_of(tiny, overhead, tiny.n_ctx - 5)
    with pytest.raises(
        PromptError, match=r"example 1 has 513 tokens \(prompt 507 \+ response 6\).*max_response"
    ):
        encode_prompts(tiny, ["Hi", prompt], responses=["ok", "abcdef"])
    batch = encode_prompts(tiny, ["Hi", prompt], responses=["ok", "abcdef"], max_response_tokens=5)
    assert batch.attention_mask.sum(dim=1).tolist()[1] == tiny.n_ctx


@pytest.mark.parametrize("blank", [" ", "\n\t  ", "\u3000"])
def test_whitespace_only_prompt_is_refused_like_an_empty_one(tiny, blank):
    for prompt in ("", blank):
        with pytest.raises(PromptError, match=r"prompt 1 is empty or whitespace only"):
            encode_prompts(tiny, ["Hi", prompt])
    with pytest.raises(PromptError, match=r"prompt 0 is empty or whitespace only"):
        encode_prompts(tiny, [[{"role": "user", "content": blank}]])
    with pytest.raises(PromptError, match=r"prompt 0 is empty or whitespace only"):
        encode_prompts(tiny.tokenizer, [blank], chat_template=False)


@pytest.mark.parametrize("blank", [" ", "\n\n", "\t "])
def test_whitespace_only_response_is_refused(tiny, blank, no_forward):
    with pytest.raises(PromptError, match=r"response 2 is empty or whitespace only"):
        encode_prompts(tiny, ["a", "b", "c"], responses=["x", "y", blank], padding_side="right")


def test_a_blank_steered_answer_still_gets_an_offline_fluency_nll_of_nan(tiny):
    """The offline judge scores generated answers as responses: a whitespace-only answer has no
    NLL (NaN, like an empty one) instead of stopping the evaluation."""
    from prosv_lens.evaluation.offline_judge import response_nll

    nll = response_nll(tiny, ["Say hi.", "Say hi.", "Say hi."], ["hello", "  \n", ""])
    assert torch.isfinite(torch.tensor(nll[0])) and bool(torch.isnan(torch.tensor(nll[1:])).all())
