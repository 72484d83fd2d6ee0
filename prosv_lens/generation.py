"""Stage 5 — batched steered generation with an exact KV cache, and its equivalence check.

The decoding loop is prosv-lens's own (the bridge's ``generate`` has no notion of where a prompt
ends). Prefill runs the whole padded prompt once; each decoding step feeds one token per row with
the HF cache, explicit ``position_ids`` (real tokens only, so left and right padding both work)
and the grown attention mask. Before every forward pass the loop sets the :class:`DecodeState`
offset, so steering hooks know which absolute columns they see:

* a prompt-only vector edits its prompt columns in prefill and **no decoded token** (its hook
  returns at once during decoding, so it costs nothing per generated token);
* an FSSV (``all``) edits every prompt token and every decoded token.

``use_cache=False`` re-runs the full sequence each step with the same hooks; the two modes give
the same logits (:func:`check_cache_equivalence` measures it for any vector and spec).

Two backends (``GenerationConfig.backend``), same position semantics:

* ``"bridge"`` (default, the reference): the loop above, through the TransformerLens bridge. Any
  TransformerLens hooks the caller attached run too; it is what every equivalence test checks.
* ``"hf"``: the Hugging Face model's own ``generate`` and KV cache on the plain Hugging Face
  modules under the bridge (same weights, no TransformerLens wrappers), steering added by a forward
  hook on the decoder layer whose output is ``hook_resid_post`` (:mod:`prosv_lens.hf_generation`).
  Greedy tokens are the bridge's and logits agree to float rounding (1e-4 in fp32 tests). Use it
  to generate many answers, above all on a GPU; TransformerLens hooks attached by the caller do not
  run, seeded sampling draws different (but reproducible) samples than the bridge, and
  ``progress`` is ignored.
* ``"auto"``: ``hf`` on CUDA, ``bridge`` elsewhere.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from prosv_lens.errors import ConfigError
from prosv_lens.interventions import AbstractIntervention, DecodeState, steering
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import Prompt, TokenBatch, check_fits_context, encode_prompts
from prosv_lens.types import NextLogits, StepLogits, Tokens
from prosv_lens.validate import in_range, integer

BACKENDS = ("bridge", "hf", "auto")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. Greedy by default; ``do_sample=True`` uses temperature and top-p.

    Attributes:
        max_new_tokens: upper bound on generated tokens per row.
        do_sample: sample instead of taking the argmax.
        temperature: softmax temperature when sampling (> 0).
        top_p: nucleus mass when sampling (0 < top_p <= 1).
        seed: seeds the sampler's own generator (global RNG untouched); ``None`` = unseeded.
        stop_at_eos: stop a row at end-of-sequence / end-of-turn tokens.
        use_cache: use the KV cache (``False`` re-runs the whole sequence each step).
        progress: show a tqdm bar over decoding steps (bridge backend only).
        backend: ``"bridge"`` (the reference loop), ``"hf"`` (Hugging Face ``generate``) or
            ``"auto"`` (``hf`` on CUDA, else ``bridge``); see the module docstring.
    """

    max_new_tokens: int = field(
        default=64, metadata={"help": "upper bound on generated tokens per row", "min": 1}
    )
    do_sample: bool = field(default=False, metadata={"help": "sample instead of the argmax"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature (> 0)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus mass when sampling (0, 1]"})
    seed: int | None = field(
        default=None,
        metadata={"help": "seeds the sampler's own generator", "default_help": "unseeded"},
    )
    stop_at_eos: bool = field(
        default=True, metadata={"help": "stop a row at end-of-sequence / end-of-turn tokens"}
    )
    use_cache: bool = field(default=True, metadata={"help": "use the KV cache"})
    progress: bool = field(
        default=False, metadata={"help": "a progress bar over decoding steps (bridge backend)"}
    )
    backend: str = field(
        default="bridge",
        metadata={"choices": BACKENDS, "help": "bridge (the reference loop), hf or auto"},
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        integer("max_new_tokens", self.max_new_tokens, minimum=1)
        in_range(
            "temperature", self.temperature, 0, low_open=True, hint="use do_sample=False for greedy"
        )
        in_range("top_p", self.top_p, 0, 1, low_open=True)
        if self.seed is not None:
            integer("seed", self.seed, minimum=0)


@dataclass(frozen=True)
class Generation:
    """Generated continuations of a batch.

    Attributes:
        prompt: the batch that was continued.
        tokens: ``[batch, new_pos]`` generated ids; after a row stops, the pad id.
        lengths: tokens each row generated, its stop token included.
        texts: decoded continuations without special tokens.
        step_logits: next-token logits at each step (``[batch, new_pos, d_vocab]``) if recorded.
    """

    prompt: TokenBatch
    tokens: Tokens
    lengths: tuple[int, ...]
    texts: tuple[str, ...]
    step_logits: StepLogits | None = None

    @property
    def n_generated(self) -> int:
        return sum(self.lengths)


def _pick(logits: NextLogits, cfg: GenerationConfig, gen: torch.Generator | None) -> torch.Tensor:
    """Next token per row from ``[batch, d_vocab]`` logits."""
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < cfg.top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def generate(
    model: LoadedModel,
    prompts: "TokenBatch | Sequence[Prompt]",
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]" = (),
    config: GenerationConfig | None = None,
    *,
    record_logits: bool = False,
) -> Generation:
    """Generate continuations of a batch, optionally steered.

    Args:
        model: the model.
        prompts: a :class:`TokenBatch`, or prompts to encode (left padding, chat template).
        interventions: steering vectors to apply (none = the unsteered model).
        config: decoding settings (default greedy, 64 new tokens, KV cache on, bridge backend).
        record_logits: keep each step's next-token logits (for equivalence checks and analysis).

    Returns:
        A :class:`Generation`. Model weights are never modified.

    Raises:
        PromptError: a prompt is blank or, with ``max_new_tokens`` added, longer than the
            model's context (:attr:`LoadedModel.n_ctx`); refused before any forward pass, on
            either backend, rather than generating fewer tokens than asked or past the context.
    """
    cfg = config or GenerationConfig()
    batch = prompts if isinstance(prompts, TokenBatch) else encode_prompts(model, prompts)
    check_fits_context(batch, model.n_ctx, cfg.max_new_tokens)
    batch = batch.to(model.device)
    if resolve_backend(cfg.backend, model.device) == "hf":
        # Same pipeline layer; imported here because hf_generation imports this module.
        from prosv_lens.hf_generation import generate_hf

        hf_tokens, hf_lengths, hf_logits = generate_hf(
            model, batch, interventions, cfg, record_logits=record_logits
        )
        return _generation(model, batch, hf_tokens, hf_lengths, hf_logits)
    rows, n_prompt = batch.batch_size, batch.n_pos
    stops = torch.tensor(model.stop_token_ids, device=model.device)
    pad_id = model.tokenizer.pad_token_id
    pad_id = int(pad_id if pad_id is not None else model.tokenizer.eos_token_id)
    gen = None
    if cfg.do_sample and cfg.seed is not None:
        gen = torch.Generator(device=model.device).manual_seed(cfg.seed)

    ids, mask = batch.input_ids, batch.attention_mask
    # The last real prompt token of each row predicts its first new token (right padding aware).
    last = (mask * torch.arange(n_prompt, device=mask.device)).argmax(dim=1)
    positions = batch.position_ids
    next_pos = positions.gather(1, last[:, None]) + 1  # position id of each row's next token
    # Logits only where they are needed (exact): the last column, unless right padding puts some
    # rows' last prompt token earlier (logits_to_keep=0 means every column).
    keep_prefill = 1 if bool((last == n_prompt - 1).all()) else 0
    finished = torch.zeros(rows, dtype=torch.bool, device=model.device)
    lengths = torch.zeros(rows, dtype=torch.long, device=model.device)
    out, logits_out = [], []
    state = DecodeState()
    cache = None
    with torch.no_grad(), steering(model, interventions, batch, state=state):
        for step in tqdm(range(cfg.max_new_tokens), disable=not cfg.progress, desc="generating"):
            if step == 0:
                state.offset = 0
                logits, cache = model.bridge(
                    ids,
                    attention_mask=mask,
                    position_ids=positions,
                    logits_to_keep=keep_prefill,
                    return_type="logits_and_cache",
                    use_cache=cfg.use_cache,
                )
                next_logits = logits[:, -1] if keep_prefill else logits[torch.arange(rows), last]
            elif cfg.use_cache:
                state.offset = n_prompt + step - 1
                logits, cache = model.bridge(
                    ids[:, -1:],
                    attention_mask=mask,
                    position_ids=next_pos - 1,
                    past_key_values=cache,
                    return_type="logits_and_cache",
                )
                next_logits = logits[:, -1]
            else:
                state.offset = 0
                logits = model.bridge(
                    ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
                )
                next_logits = logits[:, -1]
            if record_logits:
                logits_out.append(next_logits.float().cpu())
            token = _pick(next_logits, cfg, gen)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            lengths += (~finished).long()
            out.append(token)
            if cfg.stop_at_eos:
                finished |= torch.isin(token, stops)
            if bool(finished.all()) or step == cfg.max_new_tokens - 1:
                break
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = torch.cat([positions, next_pos], dim=1)
            next_pos = next_pos + 1
    tokens = torch.stack(out, dim=1).cpu()
    step_logits = torch.stack(logits_out, dim=1) if record_logits else None
    return _generation(model, batch, tokens, tuple(lengths.tolist()), step_logits)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"bridge"`` or ``"hf"``: ``"auto"`` means ``hf`` on CUDA and ``bridge`` elsewhere."""
    if backend == "auto":
        return "hf" if device.type == "cuda" else "bridge"
    return backend


def _generation(
    model: LoadedModel,
    batch: TokenBatch,
    tokens: Tokens,
    lengths: tuple[int, ...],
    step_logits: StepLogits | None,
) -> Generation:
    texts = tuple(_decode(model, tokens[i, :n]) for i, n in enumerate(lengths))
    return Generation(batch.to("cpu"), tokens, tuple(int(n) for n in lengths), texts, step_logits)


def _decode(model: LoadedModel, ids: torch.Tensor) -> str:
    """One row of ids as text (special tokens dropped)."""
    text = model.tokenizer.decode(ids, skip_special_tokens=True)
    # transformers types decode's result as ``str | list[str]`` (a batch gives a list).
    assert isinstance(text, str), "one row of ids decodes to one string"
    return text


@dataclass(frozen=True)
class CacheEquivalence:
    """Cached vs uncached steered decoding of the same batch (greedy).

    Attributes:
        max_abs_diff: largest |logit difference| over compared steps and rows.
        per_step: that maximum at each compared step.
        tokens_equal: whether the greedy tokens agree at every compared step.
        steps_compared: steps compared (up to the first step where the greedy tokens diverge).
    """

    max_abs_diff: float
    per_step: tuple[float, ...]
    tokens_equal: bool
    steps_compared: int

    def ok(self, atol: float = 1e-4) -> bool:
        return self.tokens_equal and self.max_abs_diff <= atol


def check_cache_equivalence(
    model: LoadedModel,
    prompts: "TokenBatch | Sequence[Prompt]",
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]" = (),
    *,
    max_new_tokens: int = 8,
) -> CacheEquivalence:
    """Greedy-decode with and without the KV cache under the same steering; compare logits.

    Rows are compared only while they are still generating. If the greedy tokens diverge (a
    near-tie flipped by rounding), steps from the divergence on are not compared and
    ``tokens_equal`` is False.
    """
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop_at_eos=True)
    cached = generate(model, prompts, interventions, cfg, record_logits=True)
    uncached = generate(
        model,
        cached.prompt,
        interventions,
        GenerationConfig(**{**cfg.__dict__, "use_cache": False}),
        record_logits=True,
    )
    assert cached.step_logits is not None and uncached.step_logits is not None
    steps = min(cached.tokens.shape[1], uncached.tokens.shape[1])
    same = (cached.tokens[:, :steps] == uncached.tokens[:, :steps]).all(dim=0)
    diverged = (~same).nonzero()
    compared = int(diverged[0]) + 1 if len(diverged) else steps  # logits at the flip still compare
    lengths = torch.tensor(cached.lengths)
    per_step = []
    for s in range(compared):
        active = lengths > s
        diff = (cached.step_logits[active, s] - uncached.step_logits[active, s]).abs()
        per_step.append(float(diff.max()) if diff.numel() else 0.0)
    return CacheEquivalence(
        max_abs_diff=max(per_step, default=0.0),
        per_step=tuple(per_step),
        tokens_equal=bool(len(diverged) == 0 and cached.tokens.shape == uncached.tokens.shape),
        steps_compared=compared,
    )
