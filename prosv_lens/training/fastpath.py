"""The exact fast path for training a steering vector at layer ``L``.

The model is frozen and the edit sits at ``blocks.{L}.hook_resid_post``, so nothing at or below
block ``L`` changes while the vector trains. Hence, exactly:

1. **Cache the residual once.** ``resid_post[L]`` of every training sequence is computed once
   (only blocks ``0..L`` run) and reused every epoch (:class:`ResidualCache`; it is memory-mapped
   on disk when it would exceed a memory budget).
2. **Run only the blocks above L.** Each step adds ``alpha * v`` to the cached residual at the
   steered positions and runs blocks ``L+1..`` plus the final norm (:class:`UpperStack`), by
   calling the model's own decoder with its layer list temporarily cut to ``[L+1:]`` (rotary
   positions come from ``position_ids``, masks from ``attention_mask``; Gemma-3's per-layer
   sliding/full types are cut along).
3. **Logits only where the loss needs them, in bounded memory**: the unembedding runs on response
   positions only, a chunk of tokens at a time (:mod:`prosv_lens.training.bounded_ce`).

No gradient is built for any weight (all have ``requires_grad=False``); autograd reaches only
``alpha`` and ``v``. ``tests/test_training.py`` proves loss and gradients equal the plain
full-model hook path.
"""

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from prosv_lens.directions import resid_post
from prosv_lens.hf_model import hf_causal_lm
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import TokenBatch
from prosv_lens.training.bounded_ce import token_logprobs
from prosv_lens.types import AttentionMask, Resid, Tokens


@dataclass
class ResidualCache:
    """``resid_post[L]`` of each example's real tokens, concatenated ``[total_tokens, d_model]``.

    Attributes:
        layer: the layer the residual was taken after.
        lengths: real-token count of each example (right-padded rows: the first ``n`` columns).
        storage: a float32 tensor in memory (on the model's device) or a view of a memory-mapped
            file (always on the CPU).
        path: the backing file when memory-mapped, else ``None``.
        dtype: the model's dtype, which :meth:`padded` returns.
    """

    layer: int
    lengths: list[int]
    storage: torch.Tensor
    path: Path | None = None
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).tolist()

    def close(self) -> None:
        """Release the storage and delete the backing file, if memory-mapped."""
        self.storage = torch.empty(0, self.storage.shape[1])
        if self.path is not None and self.path.exists():
            self.path.unlink()

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def padded(self, indices: Sequence[int], width: int, device: torch.device) -> Resid:
        """The residuals of ``indices`` as a right-padded ``[len(indices), width, d_model]``."""
        d, src = self.storage.shape[1], self.storage.device
        out = torch.zeros(len(indices), width, d, dtype=self.storage.dtype, device=src)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            out[row, :n] = self.storage[self.offsets[i] : self.offsets[i] + n]
        return out.to(device=device, dtype=self.dtype)


def build_residual_cache(
    model: LoadedModel,
    batch: TokenBatch,
    layer: int,
    *,
    chunk: int | None = None,
    memory_budget_bytes: int = 2 << 30,
    spill_dir: str | Path | None = None,
    progress: bool = False,
) -> ResidualCache:
    """Run blocks ``0..layer`` once over a right-padded batch and keep ``resid_post[layer]``.

    Sequences run longest first in chunks cut to their own longest length (right padding never
    reaches a real token under causal attention, so this only skips padding).

    Args:
        model: the frozen model.
        batch: every training sequence, right-padded (``encode_prompts(..., responses=...)``).
        layer: the steering layer.
        chunk: sequences per forward pass (default: 8 on a CPU, 64 on an accelerator).
        memory_budget_bytes: up to this the cache stays in memory on the model's device (GPU
            memory on a GPU: no host-to-device copy per step); above it, it is written to a
            memory-mapped file on disk instead.
        spill_dir: folder for that file (default: the system temp folder).
        progress: show a tqdm bar.
    """
    if bool((batch.attention_mask[:, :-1] < batch.attention_mask[:, 1:]).any()):
        raise ValueError("build_residual_cache needs a right-padded batch (padding_side='right')")
    model.hook_name(layer)  # validates the layer before any work
    chunk = chunk or (8 if model.device.type == "cpu" else 64)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    total, d = sum(lengths), model.d_model
    keep = (
        torch.float64 if model.dtype == torch.float64 else torch.float32
    )  # bf16/fp16 kept as fp32
    path = None
    if total * d * keep.itemsize > memory_budget_bytes:
        fd, name = tempfile.mkstemp(prefix=f"prosv-resid-L{layer}-", suffix=".f32", dir=spill_dir)
        path = Path(name)
        os.close(fd)
        np_dtype = np.float64 if keep == torch.float64 else np.float32
        storage = torch.from_numpy(np.memmap(path, dtype=np_dtype, mode="w+", shape=(total, d)))
    else:
        storage = torch.empty(total, d, dtype=keep, device=model.device)
    cache = ResidualCache(layer, lengths, storage, path, model.dtype)
    order = sorted(range(batch.batch_size), key=lambda i: -lengths[i])
    starts = range(0, batch.batch_size, chunk)
    for s in tqdm(starts, disable=not progress, desc=f"caching resid_post[{layer}]"):
        rows = order[s : s + chunk]
        width = lengths[rows[0]]
        ids, mask = batch.input_ids[rows, :width], batch.attention_mask[rows, :width]
        resid = resid_post(model, ids, mask, layer)
        for r, i in enumerate(rows):
            start = cache.offsets[i]
            storage[start : start + lengths[i]] = resid[r, : lengths[i]].to(storage.device, keep)
    return cache


class UpperStack:
    """Blocks ``layer+1 ..``, the final norm and the unembedding of a loaded model.

    Calls the model's own Hugging Face decoder with ``inputs_embeds`` = the residual after block
    ``layer`` and the decoder's layer list temporarily cut to ``[layer+1:]`` (restored on exit,
    also on error). Requires a decoder whose ``inputs_embeds`` enter the first layer unchanged
    (Llama, Gemma-3: Gemma's embedding scale lives inside its embedding module).

    The unembedding is applied by :meth:`token_logprobs` from ``weight`` (``[d_vocab, d_model]``,
    the LM head's own tensor, shared with the embedding when tied), ``bias`` (``None`` unless the
    head has a non-zero one) and ``softcap`` (Gemma's ``final_logit_softcapping`` or ``None``).
    The ``unembed`` hook points of the bridge are not run (nothing hooks them while training).

    With ``compile`` (a ``torch.compile`` backend) each block above ``layer`` runs through its
    own compiled wrapper (regional compilation: one traced graph of the block class serves every
    block; fixed shapes, so pad widths to a multiple); the model's own modules are untouched, so
    generation and analysis keep running eagerly.
    """

    def __init__(self, model: LoadedModel, layer: int, *, compile: str | None = None) -> None:
        model.hook_name(layer)  # validates the layer
        # The plain Hugging Face model (no TransformerLens hook points: nothing hooks the blocks
        # above L or the unembedding while training, and they are launch-bound on a GPU); it
        # shares every weight with the bridge.
        hf = hf_causal_lm(model)
        self.decoder = hf.get_decoder()
        head = hf.get_output_embeddings()
        bias = getattr(head, "bias", None)  # a zero bias (TransformerLens adds one) is dropped
        self.weight: torch.Tensor = head.weight
        self.bias = bias if bias is not None and bool(bias.any()) else None
        cap = getattr(hf.config, "final_logit_softcapping", None)
        self.softcap = float(cap) if cap else None
        self.layer = layer
        if not isinstance(getattr(self.decoder, "layers", None), nn.ModuleList):
            raise NotImplementedError(
                f"{model.model_id}: the fast path needs a decoder with a `layers` ModuleList; "
                "train with path='full' instead"
            )
        upper = list(self.decoder.layers)[layer + 1 :]
        if compile is not None:
            upper = [torch.compile(block, backend=compile, dynamic=False) for block in upper]
        self.blocks = nn.ModuleList(upper)

    def hidden(self, resid: Resid, attention_mask: AttentionMask, position_ids: Tokens) -> Resid:
        """Final-normed hidden states from the residual after block ``layer``."""
        layers = self.decoder.layers
        config = self.decoder.config
        layer_types = getattr(config, "layer_types", None)
        self.decoder.layers = self.blocks
        if isinstance(layer_types, list) and len(layer_types) == len(layers):
            config.layer_types = layer_types[self.layer + 1 :]
        try:
            out = self.decoder(
                inputs_embeds=resid,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            )
        finally:
            self.decoder.layers = layers
            if layer_types is not None:
                config.layer_types = layer_types
        return out.last_hidden_state

    def token_logprobs(
        self,
        hidden: Float[Tensor, "token d_model"],
        targets: Int[Tensor, " token"],
        budget_bytes: int,
    ) -> Float[Tensor, " token"]:
        """Log-probabilities of ``targets`` from final-normed hidden states: unembedding, final
        soft-cap if the model has one and log-softmax, in chunks whose logits working set stays
        within ``budget_bytes`` (:func:`~prosv_lens.training.bounded_ce.token_logprobs`)."""
        return token_logprobs(
            hidden,
            self.weight,
            targets,
            bias=self.bias,
            softcap=self.softcap,
            budget_bytes=budget_bytes,
        )


def matmul_flops_per_token(model: LoadedModel, layers: int, unembed: bool) -> float:
    """Forward multiply-add FLOPs (2 per MAC) of ``layers`` blocks (+ unembedding) per token,
    counting the weight matmuls only (attention scores are small at these lengths)."""
    cfg = model.bridge.cfg
    d, d_mlp = cfg.d_model, cfg.d_mlp
    assert d_mlp is not None, "the models trained here all have MLP blocks"
    d_head = cfg.d_head
    n_heads = cfg.n_heads
    n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    attn = d * d_head * (2 * n_heads + 2 * n_kv)
    mlp = 3 * d * d_mlp  # gated MLP (Llama, Gemma)
    vocab = cfg.d_vocab
    return 2.0 * (layers * (attn + mlp) + (d * vocab if unembed else 0))
