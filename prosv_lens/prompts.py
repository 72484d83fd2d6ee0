"""Stage 2 — chat-template-aware tokenisation into a padded :class:`TokenBatch`.

A prompt is a string (one user turn) or a list of ``{"role", "content"}`` messages. With a chat
template the prompt is rendered by the tokenizer's own template with the generation prompt
appended; without one (base models such as Gemma-3-270m) the string is used as is.

Guarantees:

* **No doubled BOS.** Templates that write the BOS token themselves (SmolLM2's ChatML starts with
  ``<|im_start|>``, which is also its BOS) are tokenised without the tokenizer adding another.
* **Padding never counts as a position.** ``attention_mask`` marks real tokens, ``prompt_mask``
  marks real prompt tokens, and ``position_ids`` counts real tokens only, so a left- or
  right-padded row computes exactly what it computes alone (up to float rounding).
* **Role spans** give, per example, the absolute columns of the system content, the user content
  and the assistant prefix (the generation prompt), found by character offsets in the rendered
  text. A default system prompt that the template injects (SmolLM2 does) is found too.
* **No silent blanks or overflows.** A blank prompt or response (empty or whitespace only) is
  refused, naming its index: it carries no instruction or target, and a whitespace token trained
  or judged as an answer would be a silently wrong result. With a :class:`LoadedModel`, a row
  longer than the model's context (:attr:`LoadedModel.n_ctx`) is refused before any forward pass
  rather than truncated: cutting a prompt would change what it asks. Exactly ``n_ctx`` tokens is
  accepted. A bare tokenizer carries no reliable context length (``model_max_length`` is often a
  placeholder), so with one the length is not checked.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from transformers import PreTrainedTokenizerBase

from prosv_lens.errors import PromptError
from prosv_lens.models import LoadedModel
from prosv_lens.types import AttentionMask, PosMask, Tokens

Message = Mapping[str, str]
Prompt = str | Sequence[Message]
Span = tuple[int, int]
ROLES = ("system", "user", "assistant")
_SENTINEL = "\u2063prosv-system-sentinel\u2063"


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of token sequences with everything positions are resolved against.

    Attributes:
        input_ids: token ids, padded with the tokenizer's pad token.
        attention_mask: 1 at real tokens, 0 at padding.
        prompt_mask: True at real prompt tokens (False at padding and at any appended response).
        role_spans: per example, role name -> ``(start, end)`` column spans (end exclusive) in
            ``input_ids``; roles a prompt lacks are absent.
        texts: the rendered prompt strings.
    """

    input_ids: Tokens
    attention_mask: AttentionMask
    prompt_mask: PosMask
    role_spans: tuple[Mapping[str, tuple[Span, ...]], ...] = field(default=())
    texts: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        shapes = {
            tuple(self.input_ids.shape),
            tuple(self.attention_mask.shape),
            tuple(self.prompt_mask.shape),
        }
        if len(shapes) != 1:
            raise PromptError(f"TokenBatch tensors disagree in shape: {sorted(shapes)}")
        if bool((self.prompt_mask & ~self.attention_mask.bool()).any()):
            raise PromptError("prompt_mask marks a padding position as a prompt token")

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def position_ids(self) -> Tokens:
        """Rotary/learned position of each token, counting real tokens only (padding gets 0)."""
        return position_ids_from_mask(self.attention_mask)

    @property
    def response_mask(self) -> PosMask:
        """True at real tokens that are not prompt tokens (teacher-forced responses)."""
        return self.attention_mask.bool() & ~self.prompt_mask

    @property
    def prompt_lengths(self) -> list[int]:
        return self.prompt_mask.sum(dim=1).tolist()

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.prompt_mask.to(device),
            self.role_spans,
            self.texts,
        )


def check_fits_context(batch: TokenBatch, n_ctx: int, new_tokens: int = 0) -> None:
    """Refuse a batch whose longest row, plus ``new_tokens`` to generate, exceeds ``n_ctx``.

    Rows are measured by their real tokens (padding is not a position), so a row of exactly
    ``n_ctx - new_tokens`` tokens is accepted. Call it before any forward pass: a model run past
    its context computes positions it was never trained on, without any error.

    Raises:
        PromptError: naming the longest offending row, its token count, the limit and the fix.
    """
    lengths = batch.attention_mask.sum(dim=1).tolist()
    worst = max(range(len(lengths)), key=lengths.__getitem__)
    n = int(lengths[worst])
    if n + new_tokens <= n_ctx:
        return
    room = n_ctx - n
    fix = f"lower max_new_tokens to {room} or shorten" if room > 0 else "shorten"
    raise PromptError(
        f"prompt {worst} has {n} tokens and max_new_tokens={new_tokens} would take it to "
        f"{n + new_tokens}, more than the model's context of {n_ctx}: {fix} the prompt"
    )


def position_ids_from_mask(attention_mask: AttentionMask) -> Tokens:
    """``cumsum(mask) - 1`` clamped at 0: the position a token has in its unpadded sequence."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def encode_prompts(
    model: LoadedModel | PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    *,
    system: str | None = None,
    padding_side: str = "left",
    chat_template: bool | None = None,
    add_generation_prompt: bool = True,
    responses: Sequence[str] | None = None,
    max_response_tokens: int | None = None,
) -> TokenBatch:
    """Render and tokenise prompts (optionally followed by responses) into a padded batch.

    Args:
        model: a :class:`LoadedModel` or a Hugging Face tokenizer.
        prompts: strings (one user turn each) or message lists.
        system: a system message prepended to string prompts (template default if ``None``).
        padding_side: ``"left"`` (the usual choice for generation) or ``"right"``.
        chat_template: render with the chat template; ``None`` means "if the tokenizer has one".
        add_generation_prompt: append the assistant prefix (the generation prompt).
        responses: teacher-forced responses appended after each prompt (raw, no end-of-turn
            token, as AxBench trains); their tokens are real but not prompt tokens.
        max_response_tokens: truncate each response to this many tokens.

    Returns:
        A :class:`TokenBatch` on the CPU (move it with ``.to(device)``).

    Raises:
        PromptError: empty prompt list, blank (empty or whitespace-only) prompt or response, bad
            padding side, message lists without a chat template, a template that does not render
            messages as a prefix-stable string, or (with a :class:`LoadedModel`) a row whose
            tokens, prompt plus truncated response, exceed the model's context ``n_ctx``.
    """
    tokenizer = model.tokenizer if isinstance(model, LoadedModel) else model
    n_ctx = model.n_ctx if isinstance(model, LoadedModel) else None
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise PromptError("no prompts given: pass a non-empty list of strings or message lists")
    if padding_side not in ("left", "right"):
        raise PromptError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    use_template = bool(tokenizer.chat_template) if chat_template is None else chat_template
    if use_template and not tokenizer.chat_template:
        raise PromptError(
            "chat_template=True but this tokenizer has no chat template (a base model such as "
            "gemma-3-270m): pass plain strings with chat_template=False/None."
        )
    rows = [
        _encode_one(tokenizer, p, i, system, use_template, add_generation_prompt)
        for i, p in enumerate(prompts)
    ]
    if responses is not None:
        if len(responses) != len(rows):
            raise PromptError(f"{len(responses)} responses for {len(rows)} prompts")
        rows = [
            _append(tokenizer, r, resp, i, max_response_tokens)
            for i, (r, resp) in enumerate(zip(rows, responses, strict=True))
        ]
    if n_ctx is not None:
        for i, r in enumerate(rows):
            _check_context(r, i, n_ctx)
    return _pad(rows, tokenizer, padding_side)


@dataclass(frozen=True)
class _Row:
    ids: list[int]
    spans: dict[str, tuple[Span, ...]]
    text: str
    n_prompt: int = -1  # -1: every token is a prompt token


def _check_context(row: _Row, index: int, n_ctx: int) -> None:
    """Refuse a row longer than the model's context (``n_ctx`` tokens exactly is accepted)."""
    if len(row.ids) <= n_ctx:
        return
    if row.n_prompt < 0:
        raise PromptError(
            f"prompt {index} has {len(row.ids)} tokens, more than the model's context of {n_ctx}: "
            f"shorten or truncate it to at most {n_ctx} tokens"
        )
    raise PromptError(
        f"example {index} has {len(row.ids)} tokens (prompt {row.n_prompt} + response "
        f"{len(row.ids) - row.n_prompt}), more than the model's context of {n_ctx}: shorten the "
        "prompt or the response, or truncate responses with max_response_tokens"
    )


def _append(
    tokenizer: PreTrainedTokenizerBase, row: _Row, response: str, index: int, limit: int | None
) -> _Row:
    if not response.strip():
        raise PromptError(
            f"response {index} is empty or whitespace only: give every example a non-empty response"
        )
    ids = tokenizer(response, add_special_tokens=False)["input_ids"][:limit]
    if not ids:
        raise PromptError(f"response {index} is empty (after truncation to {limit} tokens)")
    return _Row(row.ids + list(ids), row.spans, row.text, n_prompt=len(row.ids))


def _encode_one(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    index: int,
    system: str | None,
    use_template: bool,
    add_generation_prompt: bool,
) -> _Row:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptError(
                f"prompt {index} is empty or whitespace only: give a non-empty prompt"
            )
        messages: list[Message] = [{"role": "user", "content": prompt}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
    else:
        messages = [dict(m) for m in prompt]
        bad = [m for m in messages if set(m) < {"role", "content"} or m.get("role") is None]
        if not messages or bad:
            raise PromptError(
                f"prompt {index}: a message list needs dicts with 'role' and 'content'"
            )
        if not any(str(m["content"]).strip() for m in messages):
            raise PromptError(
                f"prompt {index} is empty or whitespace only: every message's content is blank; "
                "give a non-empty message"
            )
    if use_template:
        text, char_spans = _render_chat(tokenizer, messages, add_generation_prompt, index)
    else:
        if not isinstance(prompt, str):
            raise PromptError(f"prompt {index} is a message list but no chat template is in use")
        text, char_spans = prompt, {"user": [(0, len(prompt))]}
    ids, offsets = _tokenize(tokenizer, text)
    spans = {role: _token_span(offsets, cs) for role, cs in char_spans.items()}
    return _Row(ids, {r: s for r, s in spans.items() if s}, text)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[Message], gen: bool) -> str:
    # transformers annotates the conversation as list[dict]; any mapping renders the same (the
    # template only reads "role" and "content"), so the cast only restates its element type.
    conversation = cast(list[dict[str, str]], messages)
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen)
    # Typed as a union over tokenize=True/False; with tokenize=False it is the rendered text.
    assert isinstance(text, str), type(text).__name__
    return text


def _render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], gen: bool, index: int
) -> tuple[str, dict[str, list[Span]]]:
    """Rendered text and the character spans of each role's content."""
    text = _render(tokenizer, messages, gen)
    spans: dict[str, list[Span]] = {r: [] for r in ROLES}
    if gen:
        base = _render(tokenizer, messages, False)
        if not text.startswith(base):
            raise PromptError(
                f"prompt {index}: the chat template's generation prompt is not a suffix"
            )
        spans["assistant"].append((len(base), len(text)))
    cursor = 0
    if messages[0]["role"] != "system":
        default = _injected_system(tokenizer, messages)
        if default:
            start = text.find(default)
            spans["system"].append((start, start + len(default)))
            cursor = start + len(default)
    for m in messages:
        start = text.find(m["content"], cursor) if m["content"] else -1
        if start >= 0 and m["role"] in ("system", "user"):
            spans[m["role"]].append((start, start + len(m["content"])))
        cursor = max(cursor, start + len(m["content"])) if start >= 0 else cursor
    return text, spans


def _injected_system(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str | None:
    """The default system prompt a template inserts when none is given, if it inserts one."""
    plain = _render(tokenizer, messages, False)
    try:
        marked = _render(tokenizer, [{"role": "system", "content": _SENTINEL}, *messages], False)
    except Exception:  # noqa: BLE001 - templates without system support (e.g. Gemma's) raise
        return None
    i = marked.find(_SENTINEL)
    if i < 0:
        return None
    head, tail = marked[:i], marked[i + len(_SENTINEL) :]
    if plain.startswith(head) and plain.endswith(tail) and len(plain) > len(head) + len(tail):
        return plain[len(head) : len(plain) - len(tail)]
    return None


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[Span] | None]:
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    fast = getattr(tokenizer, "is_fast", False)
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=fast)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]] if fast else None
    bos_id = tokenizer.bos_token_id
    if bos_id is not None and len(ids) > 1 and ids[0] == ids[1] == bos_id:
        ids, offsets = ids[1:], (offsets[1:] if offsets else None)
    return ids, offsets


def _token_span(offsets: list[Span] | None, char_spans: list[Span]) -> tuple[Span, ...]:
    """Token index spans covering character spans (a token counts if it overlaps the span)."""
    if offsets is None or not char_spans:
        return ()
    out = []
    for cs, ce in char_spans:
        hits = [j for j, (s, e) in enumerate(offsets) if e > s and s < ce and e > cs]
        if hits:
            out.append((hits[0], hits[-1] + 1))
    return tuple(out)


def _pad(rows: list[_Row], tokenizer: PreTrainedTokenizerBase, side: str) -> TokenBatch:
    width = max(len(r.ids) for r in rows)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    spans = []
    for i, r in enumerate(rows):
        shift = width - len(r.ids) if side == "left" else 0
        ids[i, shift : shift + len(r.ids)] = torch.tensor(r.ids)
        mask[i, shift : shift + len(r.ids)] = 1
        spans.append({k: tuple((s + shift, e + shift) for s, e in v) for k, v in r.spans.items()})
    prompt = mask.bool().clone()
    for i, r in enumerate(rows):
        if r.n_prompt >= 0:
            start = width - len(r.ids) if side == "left" else 0
            prompt[i, start + r.n_prompt :] = False
    return TokenBatch(ids, mask, prompt, tuple(spans), tuple(r.text for r in rows))
