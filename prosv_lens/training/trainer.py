"""Joint training of the steering factor ``alpha`` and direction ``v``, many concepts at once.

Each concept k owns ``alpha_k``, ``v_k``, an optimizer (two parameter groups: ``v`` at ``lr_v``,
``alpha`` at ``lr_alpha``; no weight decay) and a linear-decay schedule. Its data order is drawn
from a generator seeded by ``(seed, concept name, epoch)``. A step gathers the current mini-batch
of every concept that still has one into **one** batch (each row steered by its own concept's
vector) and minimises ``sum_k mean_{rows of k} loss``: the gradient reaching ``(alpha_k, v_k)``
is exactly that of concept k's own mean loss, so K concepts trained together end where each
would end alone (up to float rounding from padding to a common width).

Runs are seeded and repeat bit for bit on CPU. With ``checkpoint_dir`` the full state (vectors,
optimizer and schedule states, step, logs) is saved atomically every ``checkpoint_every`` steps,
and a later call with the same directory, model, data and settings resumes exactly where it
stopped (anything else is refused; see :mod:`~prosv_lens.training.checkpoint`); the directory is
locked while a run works in it. A NaN or exploding loss, a non-finite gradient or parameter, or
an edit ``|alpha v|`` more than ``EDIT_LIMIT`` times the residual stream's median norm at the
layer stops the run with :class:`~prosv_lens.errors.TrainingDivergedError` naming the step, the
concept, the values and the settings.
"""

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from prosv_lens.concepts import ConceptData
from prosv_lens.errors import DtypeError, PositionSpecError, TrainingDivergedError
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import TokenBatch, encode_prompts
from prosv_lens.safe_io import RunLock, check_writable
from prosv_lens.training.bounded_ce import rows_per_chunk
from prosv_lens.training.checkpoint import fingerprint, resume, save_checkpoint, state_dict
from prosv_lens.training.config import TrainConfig
from prosv_lens.training.fastpath import ResidualCache, UpperStack, build_residual_cache
from prosv_lens.training.forward import gather_rows, logprobs_fast, logprobs_full
from prosv_lens.training.objectives import SequenceLogprobs, lang_loss, simpo_loss

ACTIVATION_CAP_BYTES = 12 << 30  # a step's activations, whatever the device's free memory
EXPLOSION = 100.0  # a loss above 100x max(1, its first-step value) has exploded
# An edit |alpha v| above 1000x the median residual norm at the layer has exploded. Measured on
# SmolLM2 (layer 12, median norm 150): the paper's init gives ~3x, trained vectors 0.4-1.2x, and
# the largest grid cells (beta 64, c 32) ~200x; the loss, squashed by the model's normalisation,
# stays finite long after alpha and v run away (alpha 33 -> 1.9e12 in four steps at lr 1e3).
EDIT_LIMIT = 1000.0


@dataclass(frozen=True)
class TrainResult:
    """Trained vectors (by concept name), per-step logs (after each update), and what the run
    cost: steps, wall time, examples and real tokens processed (per-concept rows summed)."""

    vectors: dict[str, SteeringVector]
    logs: dict[str, list[dict[str, float | int]]]
    steps: int
    seconds: float
    tokens: int
    examples: int


@dataclass
class _Concept:
    data: ConceptData
    sources: list[int]  # dataset indices: [winner] or [winner, loser]
    alpha: nn.Parameter
    v: nn.Parameter
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    total_steps: int
    refs: list[torch.Tensor] = field(default_factory=list)
    log: list[dict[str, float | int]] = field(default_factory=list)


def default_micro_rows(
    device: torch.device,
    *,
    tokens_per_row: int,
    bytes_per_token: int,
    reserved_bytes: int = 0,
    free_bytes: int | None = None,
) -> int:
    """Rows per forward pass: 8 on a CPU; on an accelerator as many as fit, from 8 to 256.

    On 2 CPU cores (SmolLM2, 8 AxBench concepts x 24 examples in one pass) 8 rows took 64.7 s,
    12 rows 66.2 s and 16 rows 81.2 s: bigger passes only add memory traffic. On a GPU one
    concept's batch leaves the device idle, so the rows of all K concepts of a step should share a
    pass, as far as memory allows: a row costs ``tokens_per_row * bytes_per_token`` bytes
    (:func:`step_bytes_per_token`), and the rows get a quarter of the device's free memory
    (``free_bytes``; default: asked of the device), at most ``ACTIVATION_CAP_BYTES`` (12 GiB, so
    that a step peaks near the weights + 16 GB even on a large card), less ``reserved_bytes``
    (the fast path's one chunk of logits, which does not grow with the rows).
    """
    if device.type == "cpu":
        return 8
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 8 << 30
    per_row = max(1, tokens_per_row * bytes_per_token)
    budget = min(free_bytes // 4, ACTIVATION_CAP_BYTES) - reserved_bytes
    return max(8, min(256, budget // per_row))


def step_bytes_per_token(model: LoadedModel, layer: int, *, path: str, tokens_per_row: int) -> int:
    """Estimated bytes one token of a row keeps alive for the backward of a training step.

    Per block run (those above ``layer`` on the fast path, all on the full path): 12 tensors of
    width ``d_model`` and 4 of width ``d_mlp`` (norm inputs and outputs, q, k, v, attention
    output; gate, up, activation, product) and 3 rows of ``tokens_per_row`` attention scores per
    head (eager soft-capped attention keeps scores, tanh and probabilities), in the model's
    dtype. On tiny Llama, Qwen2, Gemma-2 and Gemma-3 this is 1.5-2.5x what autograd really saves
    (``tests/test_bounded_ce.py``), on purpose. The full path also keeps four fp32 copies of its
    logits at every position (logits, log-softmax and their gradients); the fast path's logits
    are computed in chunks of bounded size (:mod:`prosv_lens.training.bounded_ce`), not per row.
    """
    cfg = model.bridge.cfg
    assert cfg.d_mlp is not None, "the models trained here all have MLP blocks"
    blocks = cfg.n_layers - (layer + 1 if path == "fast" else 0)
    per_block = 12 * cfg.d_model + 4 * cfg.d_mlp + 3 * cfg.n_heads * tokens_per_row
    logits = 16 * cfg.d_vocab if path == "full" else 0
    return blocks * per_block * model.dtype.itemsize + logits


def check_training_dtype(model: LoadedModel) -> None:
    """Refuse a model dtype this trainer cannot train correctly, before any work.

    Float64 Gemma-2/Gemma-3 checkpoints give a NaN loss: their eager attention runs the softmax
    in float32, so a padded query row whose keys are all masked (right padding beyond a sliding
    window) turns float64's mask value into -inf, its probabilities into NaN, and the NaN reaches
    real tokens through ``0 * NaN`` in the next layer. Float64 Llama-family models train exactly.
    """
    model_type = getattr(model.bridge.original_model.config, "model_type", "")
    if model.dtype == torch.float64 and str(model_type).startswith("gemma"):
        raise DtypeError(
            f"{model.model_id} ({model_type}) cannot be trained in float64: its attention "
            "softmax runs in float32 and padded rows turn into NaN. Load it in float32 (exact "
            "reference) or bfloat16."
        )


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 matmuls and convolutions on CUDA inside the block; restored on exit."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def _order(cfg: TrainConfig, name: str, epoch: int, n: int) -> list[int]:
    gen = torch.Generator().manual_seed(_seed(cfg.seed, name, "order", epoch))
    return torch.randperm(n, generator=gen).tolist()


def _init_params(cfg: TrainConfig, name: str, d_model: int) -> tuple[nn.Parameter, nn.Parameter]:
    gen = torch.Generator().manual_seed(_seed(cfg.seed, name, "init"))
    bound = cfg.c / math.sqrt(d_model)
    v = (torch.rand(d_model, generator=gen) * 2 - 1) * bound
    if cfg.variant == "unit":
        v = v / v.norm()
    alpha = 1.0 if cfg.variant == "fixed_alpha" else cfg.beta * math.sqrt(d_model)
    a = nn.Parameter(torch.tensor(alpha), requires_grad=cfg.variant != "fixed_alpha")
    return a, nn.Parameter(v)


def _optimizer(cfg: TrainConfig, alpha: nn.Parameter, v: nn.Parameter, total: int) -> tuple:
    groups = [{"params": [v], "lr": cfg.lr_v, "name": "v"}]
    if alpha.requires_grad:
        groups.append({"params": [alpha], "lr": cfg.lr_alpha, "name": "alpha"})
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(groups, weight_decay=0.0)
    else:
        opt = torch.optim.SGD(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1.0 - t / total))
    return opt, sched


class _Runner:
    """Holds encoded data, caches and per-concept state for one training run."""

    def __init__(
        self,
        model: LoadedModel,
        data: Sequence[ConceptData],
        cfg: TrainConfig,
        cache_budget: int = 2 << 30,
        cache_dir: str | Path | None = None,
        micro_rows: int | None = None,
    ) -> None:
        self.model, self.cfg = model, cfg
        model.hook_name(cfg.layer)  # layer out of range -> ValueError naming the valid range
        check_training_dtype(model)
        if not data:
            raise ValueError("no training data: pass at least one ConceptData")
        names = [d.name for d in data]
        if len(set(names)) != len(names):
            raise ValueError(f"concept names must be unique, got {names}")
        spec = PositionSpec.parse(cfg.positions)
        self.batches: list[TokenBatch] = []
        self.masks: list[torch.Tensor] = []
        self.lengths: list[list[int]] = []  # real tokens of each example of each dataset
        self.concepts: list[_Concept] = []
        for d in data:
            self._check(d)
            sources = [self._encode(d, d.responses, spec)]
            if cfg.objective == "simpo":
                sources.append(self._encode(d, d.negatives or (), spec))
            n = len(d.prompts)
            per_epoch = math.ceil(n / cfg.batch_size)
            alpha, v = _init_params(cfg, d.name, model.d_model)
            dtype = model.dtype if cfg.param_dtype == "model" else torch.float32
            alpha.data, v.data = (t.data.to(model.device, dtype) for t in (alpha, v))
            opt, sched = _optimizer(cfg, alpha, v, per_epoch * cfg.epochs)
            self.concepts.append(
                _Concept(d, sources, alpha, v, opt, sched, per_epoch, per_epoch * cfg.epochs)
            )
        self.upper = (
            UpperStack(model, cfg.layer, compile=cfg.compile) if cfg.path == "fast" else None
        )
        self.pad_multiple = cfg.pad_multiple or (1 if model.device.type == "cpu" else 64)
        if self.upper is not None:  # a budget too small for one token's logits fails before work
            rows_per_chunk(
                self.upper.weight,
                softcap=self.upper.softcap,
                budget_bytes=cfg.logits_budget_mb << 20,
            )
        self.caches: list[ResidualCache] = []
        if self.upper is not None:
            budget = cache_budget // max(1, len(self.batches))
            self.caches = [
                build_residual_cache(
                    model, b, cfg.layer, memory_budget_bytes=budget, spill_dir=cache_dir
                )
                for b in self.batches
            ]
        width = max(b.input_ids.shape[1] for b in self.batches)
        self.micro_rows = micro_rows or default_micro_rows(  # after the caches took their memory
            model.device,
            tokens_per_row=width,
            bytes_per_token=step_bytes_per_token(
                model, cfg.layer, path=cfg.path, tokens_per_row=width
            ),
            reserved_bytes=cfg.logits_budget_mb << 20 if cfg.path == "fast" else 0,
        )
        if cfg.objective == "simpo":
            self._reference_logprobs()

    def _check(self, d: ConceptData) -> None:
        if not d.prompts or len(d.prompts) != len(d.responses):
            raise ValueError(
                f"concept {d.name!r}: needs a non-empty list of prompts and one response per "
                f"prompt (got {len(d.prompts)} prompts, {len(d.responses)} responses)"
            )
        if self.cfg.objective == "simpo" and (
            d.negatives is None or len(d.negatives) != len(d.prompts)
        ):
            raise ValueError(
                f"concept {d.name!r}: the simpo objective needs one neutral response per prompt (negatives)"
            )

    def _encode(self, d: ConceptData, responses: Sequence[str], spec: PositionSpec) -> int:
        batch = encode_prompts(
            self.model,
            list(d.prompts),
            padding_side="right",
            responses=list(responses),
            max_response_tokens=self.cfg.max_response_tokens,
        )
        mask = spec.resolve(batch).mask
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise PositionSpecError(
                f"concept {d.name!r}: positions '{spec}' leave no steered token in examples {empty}"
            )
        self.batches.append(batch)
        self.masks.append(mask)
        self.lengths.append(batch.attention_mask.sum(dim=1).tolist())
        return len(self.batches) - 1

    def logprobs(self, sources: list[tuple[int, int]], deltas: torch.Tensor) -> SequenceLogprobs:
        rows = gather_rows(self.batches, self.masks, sources, pad_multiple=self.pad_multiple)
        if self.upper is not None:
            return logprobs_fast(
                self.upper,
                self.caches,
                rows,
                deltas,
                logits_budget_bytes=self.cfg.logits_budget_mb << 20,
            )
        return logprobs_full(self.model, self.cfg.layer, rows, deltas)

    def reference_resid_norm(self, rows: int = 8) -> float:
        """Median norm of the unsteered residual at the layer over the real tokens of the first
        ``rows`` examples: the scale the divergence guard compares the edit ``|alpha v|`` with."""
        batch = self.batches[0]
        n = min(rows, batch.batch_size)
        seen: list[torch.Tensor] = []

        def keep(resid: torch.Tensor, hook: object) -> None:  # noqa: ARG001 - TL hook signature
            seen.append(resid.detach().float().norm(dim=-1))

        ids, mask = batch.input_ids[:n].to(self.model.device), batch.attention_mask[:n]
        with torch.no_grad():
            self.model.bridge.run_with_hooks(
                ids,
                attention_mask=mask.to(self.model.device),
                fwd_hooks=[(self.model.hook_name(self.cfg.layer), keep)],
                return_type=None,
            )
        return float(seen[0].cpu()[mask.bool()].median())

    def _reference_logprobs(self) -> None:
        """Unsteered summed log-probs of winners and losers (fixed: computed once)."""
        with torch.no_grad():
            for c in self.concepts:
                zero = torch.zeros(self.model.d_model, device=self.model.device)
                c.refs = [self.all_logprobs(src, zero).total for src in c.sources]

    def all_logprobs(self, src: int, delta: torch.Tensor, chunk: int = 8) -> SequenceLogprobs:
        """Summed response log-probs of every example of dataset ``src`` under one fixed edit
        ``delta`` (``[d_model]``; zeros = unsteered), in chunks."""
        n = self.batches[src].batch_size
        parts = []
        for s in range(0, n, chunk):
            idx = list(range(s, min(n, s + chunk)))
            parts.append(self.logprobs([(src, i) for i in idx], delta.expand(len(idx), -1)))
        return SequenceLogprobs(
            torch.cat([p.total for p in parts]), torch.cat([p.n_tokens for p in parts])
        )

    def step_sources(self, t: int) -> list[tuple[_Concept, list[int]]]:
        out = []
        for c in self.concepts:
            if t < c.total_steps:
                epoch, j = divmod(t, c.steps_per_epoch)
                order = _order(self.cfg, c.data.name, epoch, len(c.data.prompts))
                out.append((c, order[j * self.cfg.batch_size : (j + 1) * self.cfg.batch_size]))
        return out

    def backward(self, plan: list[tuple[_Concept, list[int]]]) -> tuple[list[torch.Tensor], int]:
        """Accumulate the gradient of ``sum_k mean_{examples of k} loss`` for one step.

        The step's examples (all concepts) are sorted by length and run in micro-batches of at
        most ``micro_rows`` rows (an example's winner and loser stay together), each weighted by
        ``1 / (examples of its concept)``: the same gradient as one big batch, with bounded
        memory and little padding. Returns each concept's mean loss (detached) and the tokens run.
        """
        units = [(k, i) for k, (_, idx) in enumerate(plan) for i in idx]
        units.sort(key=lambda u: -self.lengths[plan[u[0]][0].sources[0]][u[1]])
        per_unit = len(plan[0][0].sources)
        size = max(1, self.micro_rows // per_unit)
        totals = [torch.zeros(()) for _ in plan]
        tokens = 0
        for s in range(0, len(units), size):
            chunk = units[s : s + size]
            sources, deltas = [], []
            for src_pos in range(per_unit):
                for k, i in chunk:
                    c = plan[k][0]
                    sources.append((c.sources[src_pos], i))
                    deltas.append(c.alpha * c.v)
            seq = self.logprobs(sources, torch.stack(deltas))
            n = len(chunk)
            win = SequenceLogprobs(seq.total[:n], seq.n_tokens[:n])
            if self.cfg.objective == "lang":
                per_example = lang_loss(win)
            else:
                lose = SequenceLogprobs(seq.total[n:], seq.n_tokens[n:])
                ref_w = torch.stack([plan[k][0].refs[0][i] for k, i in chunk])
                ref_l = torch.stack([plan[k][0].refs[1][i] for k, i in chunk])
                per_example = simpo_loss(win, lose, ref_w, ref_l)
            weights = torch.tensor(
                [1.0 / len(plan[k][1]) for k, _ in chunk], device=per_example.device
            )
            (per_example * weights).sum().backward()
            for (k, _), contribution in zip(
                chunk, (per_example * weights).detach().cpu(), strict=True
            ):
                totals[k] = totals[k] + contribution
            tokens += sum(self.lengths[src][i] for src, i in sources)
        return totals, tokens


def _diverged(cfg: TrainConfig, t: int, c: _Concept, what: str) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"training diverged at step {t} (epoch {t // c.steps_per_epoch}), concept {c.data.name!r}: "
        f"{what}. Settings: optimizer={cfg.optimizer}, lr_v={cfg.lr_v}, lr_alpha={cfg.lr_alpha}, "
        f"beta={cfg.beta}, c={cfg.c}, positions={cfg.positions}, layer={cfg.layer}. Lower the "
        "learning rates or the factor init."
    )


def _update(
    cfg: TrainConfig, t: int, c: _Concept, loss: torch.Tensor, resid_norm: float
) -> dict[str, float | int]:
    value = float(loss.detach())
    first = c.log[0]["loss"] if c.log else value
    if not math.isfinite(value) or value > EXPLOSION * max(1.0, abs(first)):
        raise _diverged(cfg, t, c, f"loss is {value} (first step: {first})")
    assert c.v.grad is not None
    grad_v = float(c.v.grad.norm())
    grad_a = float(c.alpha.grad.detach()) if c.alpha.grad is not None else 0.0
    if not (math.isfinite(grad_v) and math.isfinite(grad_a)):
        raise _diverged(
            cfg, t, c, f"gradient is not finite (|grad v| {grad_v}, grad alpha {grad_a})"
        )
    if cfg.clip_v is not None:
        torch.nn.utils.clip_grad_norm_([c.v], cfg.clip_v)  # v only: alpha is never clipped
    lrs = {g["name"]: g["lr"] for g in c.optimizer.param_groups}
    c.optimizer.step()
    c.schedule.step()
    c.optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        if cfg.variant == "unit":
            c.v.div_(c.v.norm())  # in place, as ``/=`` was; keeps the Parameter
        if not (torch.isfinite(c.v).all() and torch.isfinite(c.alpha)):
            raise _diverged(cfg, t, c, "parameters became non-finite")
        alpha, v_norm = float(c.alpha), float(c.v.norm())
    edit = abs(alpha) * v_norm
    if edit > EDIT_LIMIT * resid_norm:
        raise _diverged(
            cfg,
            t,
            c,
            f"the edit |alpha v| = {edit:.3g} (alpha {alpha:.3g}, |v| {v_norm:.3g}) "
            f"is {edit / resid_norm:.3g}x the median residual norm {resid_norm:.3g} at layer "
            f"{cfg.layer} (limit {EDIT_LIMIT:g}x)",
        )
    return {
        "step": t,
        "epoch": t // c.steps_per_epoch,
        "loss": value,
        "alpha": alpha,
        "v_norm": v_norm,
        "grad_norm_v": grad_v,
        "grad_alpha": grad_a,
        "lr_v": lrs["v"],
        "lr_alpha": lrs.get("alpha", 0.0),
    }


def train(
    model: LoadedModel,
    data: ConceptData | Sequence[ConceptData],
    cfg: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    callbacks: Sequence[Callable[[int, dict[str, dict[str, float | int]]], None]] = (),
    progress: bool = True,
    cache_budget_bytes: int = 2 << 30,
    cache_dir: str | Path | None = None,
    micro_rows: int | None = None,
) -> TrainResult:
    """Train one steering vector per concept (all concepts in one pass).

    Args:
        model: the frozen model (its weights get no gradient and never change).
        data: one or several concepts.
        cfg: the settings (:meth:`TrainConfig.prosv` / :meth:`TrainConfig.fssv` presets).
        checkpoint_dir: save/resume the run state here.
        checkpoint_every: steps between checkpoints (0: only at the end).
        callbacks: called after every step with ``(step, {concept: log row})``.
        progress: show a tqdm bar with loss, alpha and |v|.
        cache_budget_bytes: above this the cached residuals are memory-mapped on disk.
        cache_dir: folder for those files (default: the system temp folder); deleted at the end.
        micro_rows: rows per forward pass (a step's rows of all concepts are run in length-sorted
            micro-batches with gradient accumulation; the result is the same up to rounding).
            Default :func:`default_micro_rows`: 8 on a CPU; on an accelerator as many rows as its
            free memory allows (up to 256), since K concepts' rows in one pass are what keeps
            the device busy.

    Returns:
        A :class:`TrainResult`; each vector's ``info`` holds the settings and the per-step log.

    Raises:
        ValueError: empty data, layer out of range, bad checkpoint. PositionSpecError: positions
            that leave an example with no steered token. TrainingDivergedError: NaN/explosion.
    """
    data = [data] if isinstance(data, ConceptData) else list(data)
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if checkpoint_dir is not None:  # writable and ours alone, before any work
            stack.enter_context(RunLock(check_writable(checkpoint_dir, flag="checkpoint_dir")))
        stack.enter_context(tf32_matmuls(cfg.tf32))
        runner = _Runner(model, data, cfg, cache_budget_bytes, cache_dir, micro_rows)
        try:
            return _run(runner, t0, checkpoint_dir, checkpoint_every, callbacks, progress)
        finally:
            for cache in runner.caches:
                cache.close()


def _run(
    runner: _Runner,
    t0: float,
    checkpoint_dir: str | Path | None,
    checkpoint_every: int,
    callbacks: Sequence[Callable[[int, dict[str, dict[str, float | int]]], None]],
    progress: bool,
) -> TrainResult:
    model, cfg = runner.model, runner.cfg
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fp: dict = {}  # only a checkpointed run needs one (it hashes the data and the embedding)
    start = 0
    if folder is not None:
        fp = fingerprint(model, cfg, [c.data for c in runner.concepts])
        start = resume(folder, fp, runner.concepts)
    resid_norm = runner.reference_resid_norm()
    total = max(c.total_steps for c in runner.concepts)
    tokens = examples = 0
    bar = tqdm(
        range(start, total), initial=start, total=total, disable=not progress, desc="training"
    )
    for t in bar:
        plan = runner.step_sources(t)
        losses, n_tok = runner.backward(plan)
        tokens += n_tok
        examples += sum(len(idx) for _, idx in plan)
        rows = {
            c.data.name: _update(cfg, t, c, loss, resid_norm)
            for (c, _), loss in zip(plan, losses, strict=True)
        }
        for (c, _), row in zip(plan, rows.values(), strict=True):
            c.log.append(row)
        first = next(iter(rows.values()))
        bar.set_postfix(
            loss=f"{first['loss']:.3f}", alpha=f"{first['alpha']:.1f}", v=f"{first['v_norm']:.2f}"
        )
        if folder is not None and checkpoint_every and (t + 1) % checkpoint_every == 0:
            save_checkpoint(folder, state_dict(fp, runner.concepts, t + 1))
        for cb in callbacks:
            cb(t, rows)
    if folder is not None:
        save_checkpoint(folder, state_dict(fp, runner.concepts, total))
    vectors = {
        c.data.name: SteeringVector(
            c.v.detach().cpu(),
            layer=cfg.layer,
            positions=cfg.positions,
            alpha=c.alpha.detach().cpu(),
            model_id=model.model_id,
            chat_template_hash=model.chat_template_hash,
            info={
                "method": f"trained/{cfg.variant}",
                "concept": c.data.name,
                "train_config": cfg.to_dict(),
                "final_loss": c.log[-1]["loss"] if c.log else None,
                "train_log": c.log,
            },
        )
        for c in runner.concepts
    }
    return TrainResult(
        vectors,
        {c.data.name: c.log for c in runner.concepts},
        total - start,
        time.perf_counter() - t0,
        tokens,
        examples,
    )


def response_loss(
    model: LoadedModel,
    data: ConceptData,
    vector: SteeringVector | None,
    *,
    layer: int,
    positions: str = "f2+l2",
    max_response_tokens: int | None = 128,
) -> torch.Tensor:
    """Per-example mean response NLL (the ``lang`` loss) under ``vector`` (``None``: unsteered)."""
    cfg = TrainConfig(
        layer=layer,
        positions=str(vector.positions) if vector else positions,
        max_response_tokens=max_response_tokens,
        epochs=1,
    )
    runner = _Runner(model, [data], cfg)
    delta = vector.delta.detach() if vector is not None else torch.zeros(model.d_model)
    with torch.no_grad():
        return lang_loss(runner.all_logprobs(0, delta.to(model.device)))
