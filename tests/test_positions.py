import pytest
import torch

from prosv_lens.errors import PositionSpecError
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts

PROMPTS = ["Name three colors.", "Hi", "Write a haiku about autumn leaves."]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("f2+l2", "f2+l2"),
        ("first:2 + last:2", "f2+l2"),
        ("F4", "f4"),
        ("all", "all"),
        ("prompt", "prompt"),
        ("all_prompt", "prompt"),
        ("idx:3,0,-1", "idx:-1,0,3"),
        ("user", "role:user"),
        ("role:system+l1", "role:system+l1"),
        ([5, 0], "idx:0,5"),
    ],
)
def test_parse_canonical(text, canonical):
    spec = PositionSpec.parse(text)
    assert str(spec) == canonical
    assert PositionSpec.parse(str(spec)) == spec
    assert spec.is_prompt_only == (canonical != "all")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty position spec"),
        ("x3", "cannot parse 'x3'.*f2\\+l2"),
        ("f0", "k must be >= 1"),
        ("all+f2", "'all' already covers"),
        ("role:tool", "cannot parse 'role:tool'"),
        ("idx:", "cannot parse"),
        ("f2++l2", "cannot parse ''"),
        ([], "non-empty list of ints"),
    ],
)
def test_bad_specs_are_clear_errors(text, match):
    with pytest.raises(PositionSpecError, match=match):
        PositionSpec.parse(text)


def _picked(batch, spec):
    res = PositionSpec.parse(spec).resolve(batch)
    out = []
    for b in range(batch.batch_size):
        first = int(batch.attention_mask[b].nonzero()[0])
        out.append([c - first for c in res.mask[b].nonzero().flatten().tolist()])
    return res, out


@pytest.mark.parametrize("side", ["left", "right"])
def test_resolution_is_relative_to_real_tokens(tiny, side):
    batch = encode_prompts(tiny, PROMPTS, padding_side=side)
    n = batch.prompt_lengths
    res, picked = _picked(batch, "f2+l2")
    assert picked == [[0, 1, k - 2, k - 1] for k in n]
    assert not bool((res.mask & ~batch.attention_mask.bool()).any())  # padding never counts
    assert not res.steer_generated
    _, picked = _picked(batch, "idx:0,-1")
    assert picked == [[0, k - 1] for k in n]
    res, picked = _picked(batch, "all")
    assert picked == [list(range(k)) for k in n] and res.steer_generated
    _, picked = _picked(batch, "prompt")
    assert picked == [list(range(k)) for k in n]


def test_union_of_role_and_first(tiny):
    batch = encode_prompts(tiny, ["Hi"])
    res = PositionSpec.parse("f1+role:user").resolve(batch)
    ids = batch.input_ids[0, res.mask[0]].tolist()
    assert tiny.tokenizer.decode(ids) == "<|im_start|>Hi"


def test_too_short_prompt_names_the_example(tiny):
    batch = encode_prompts(
        tiny, ["A much longer prompt than the other one", "Hi"], chat_template=False
    )
    with pytest.raises(
        PositionSpecError, match=r"example 1 \(2 prompt tokens, text 'Hi'\).*'f5' needs at least 5"
    ):
        PositionSpec.parse("f5").resolve(batch)
    with pytest.raises(PositionSpecError, match=r"example 1.*indices \[7\] are out of range"):
        PositionSpec.parse("idx:7").resolve(batch)


def test_missing_role_names_the_example_and_roles_present(tiny):
    batch = encode_prompts(tiny, ["Hi"], chat_template=False)
    with pytest.raises(PositionSpecError, match=r"example 0.*no 'system' role span.*\['user'\]"):
        PositionSpec.parse("role:system").resolve(batch)


def test_chunk_masks_for_decoding(tiny):
    batch = encode_prompts(tiny, ["Hi", "Hello"], padding_side="left")
    n = batch.n_pos
    prompt_only = PositionSpec.parse("l1").resolve(batch)
    assert torch.equal(prompt_only.chunk(0, n), prompt_only.mask)
    assert prompt_only.chunk(n, 1) is None  # decoding: nothing to edit
    grown = prompt_only.chunk(0, n + 3)  # uncached decoding re-runs the whole sequence
    assert grown.shape == (2, n + 3) and not bool(grown[:, n:].any())
    fssv = PositionSpec.parse("all").resolve(batch)
    assert bool(fssv.chunk(n + 4, 1).all()) and bool(fssv.chunk(0, n + 2)[:, n:].all())
