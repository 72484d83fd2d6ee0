"""Plan a reproduce run before running it: memory and time per stage, from the shape alone.

Nothing here loads a model or reads data. Memory comes from the setting's :class:`ModelShape`
and sizes; time from a FLOP count divided by the device's matmul rate, measured on the spot
(:func:`probe_device`: a few square matmuls in the run's dtype and a few large copies), with
decoding steps bounded below by streaming the weights once at the measured copy bandwidth. Both
are estimates; :meth:`Plan.check` refuses a run whose peak memory exceeds the device and names
the stage, what it needs, what there is, and the knob setting that would make it fit.

Assumptions (constants below): chat-templated instructions of :data:`PROMPT_TOKENS` tokens, the
steering prompt adds :data:`STEERING_PROMPT_TOKENS`; the trainer reaches :data:`EFFICIENCY` of
the matmul rate (what this project's trainer reached on the 2-core CPU, reports/training.md); a
decoding step on a GPU also pays :data:`GPU_STEP_OVERHEAD` per layer (kernel launches; a
judgement); a stage
may use :data:`USABLE` of the device memory (the rest: allocator slack, CUDA context, Python).
"""

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from prosv_lens.errors import DeviceFitError, ExperimentError
from prosv_lens.experiments.settings import (
    SMOLLM2_135M,
    ModelShape,
    RunSizes,
    Setting,
)
from prosv_lens.training.trainer import default_micro_rows

PROMPT_TOKENS = 64
STEERING_PROMPT_TOKENS = 40
UTILITY_PROMPT_TOKENS = 48
JUDGE_TOKENS = 256  # the offline judge scores at most this many response tokens
EFFICIENCY = 0.45
GPU_STEP_OVERHEAD = 3e-4  # seconds per layer per decoding step on a GPU: launches (judgement)
USABLE = 0.9
MINILM_BYTES = 0.1e9
N_BUILTIN_UTILITY = 84
N_METHODS_SCORED = 5  # unsteered, prompt, DiffMean, PrOSV, FSSV
GB = 1e9
Num = int | float


@dataclass(frozen=True)
class Resources:
    """Execution knobs that trade memory for speed; they do not change what is computed beyond
    float rounding, so they are not part of a run's fingerprint.

    Attributes:
        micro_rows: training rows per forward pass (``None``: 8 on a CPU, on a GPU the step's
            rows of all concepts, up to 256, as far as memory allows).
        logits_budget_mb: memory for one chunk of response logits in training.
        cache_budget_mb: the residual cache stays in device memory up to this, beyond it is
            memory-mapped on disk.
    """

    micro_rows: int | None = field(
        default=None,
        metadata={
            "help": "training rows per forward pass",
            "min": 1,
            "default_help": "8 on CPU, all on GPU",
        },
    )
    logits_budget_mb: int = field(
        default=1024, metadata={"help": "response-logits chunk (MiB)", "min": 1}
    )
    cache_budget_mb: int = field(
        default=2048,
        metadata={"help": "residual cache (MiB) kept in memory, the rest on disk", "min": 0},
    )

    def __post_init__(self) -> None:
        """Raises ExperimentError naming a knob that is not a whole number in range (the
        residual cache may be 0 MB: all of it on disk)."""
        for name, low in (("micro_rows", 1), ("logits_budget_mb", 1), ("cache_budget_mb", 0)):
            value = getattr(self, name)
            if value is None and name == "micro_rows":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ExperimentError(
                    f"{name} must be a whole number >= {low}, got {value!r}: pass "
                    f"--{name.replace('_', '-')} {low} or more"
                )


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run is planned for: usable memory (bytes), matmul rate (FLOP/s in the run
    dtype), copy bandwidth (bytes/s), and how these were obtained."""

    type: str
    name: str
    memory: Num
    total: Num
    flops: Num
    bandwidth: Num
    how: str


def _host_memory() -> tuple[float, float]:
    """(available, total) RAM in bytes: psutil if installed, else /proc/meminfo."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return float(vm.available), float(vm.total)
    except ImportError:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = float(value.split()[0]) * 1024
        return info.get("MemAvailable", info["MemTotal"]), info["MemTotal"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(device: torch.device, work: Callable[[], object], amount: Num, budget_s: Num) -> float:
    work()  # warm-up
    _sync(device)
    t0, n = time.perf_counter(), 0
    while True:
        work()
        n += 1
        _sync(device)
        if time.perf_counter() - t0 >= budget_s:
            return amount * n / (time.perf_counter() - t0)


def probe_device(
    device: str | None,
    dtype: torch.dtype,
    *,
    memory_gb: Num | None = None,
    tflops: Num | None = None,
    bandwidth_gbs: Num | None = None,
) -> DeviceInfo:
    """Memory, matmul rate and copy bandwidth of ``device`` (``None``: CUDA if present).

    Given values replace what would be read or measured, so a run can also be planned for a
    device that is not here (``device="cuda"`` on a CPU machine needs all three).
    """
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError, ValueError):
        raise ExperimentError(f"{device!r} is not a device: use cpu or cuda") from None
    hypothetical = dev.type == "cuda" and not torch.cuda.is_available()
    if hypothetical and None in (memory_gb, tflops, bandwidth_gbs):
        raise ExperimentError(
            "there is no CUDA device here (to plan a run for one, give --dry-run with "
            "--device-memory GB, --device-tflops T and --device-bandwidth GB/s)"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ExperimentError(f"device {dev} cannot be planned for: use cpu or cuda")
    how = []
    if dev.type == "cuda" and not hypothetical:
        free, total = (float(x) for x in torch.cuda.mem_get_info(dev))
        name = torch.cuda.get_device_name(dev)
    elif dev.type == "cuda":
        assert memory_gb is not None  # hypothetical: all three were required above
        free = total = memory_gb * GB
        name = "a CUDA device (given, not present)"
    else:
        free, total = _host_memory()
        threads, cores = torch.get_num_threads(), os.cpu_count()
        name = f"{platform.machine()} CPU, {threads} threads, of {cores} cores"
    if memory_gb is not None:
        free = total = memory_gb * GB
        how.append(f"memory {memory_gb:g} GB given")
    if tflops is None:
        n = 4096 if dev.type == "cuda" else 1024
        a, b = (torch.randn(n, n, device=dev).to(dtype) for _ in range(2))
        flops = _rate(dev, lambda: a @ b, 2.0 * n**3, 0.3)
        how.append(
            f"matmul rate measured now ({n}x{n} {str(dtype).removeprefix('torch.')} matmuls, 0.3 s)"
        )
    else:
        flops = tflops * 1e12
        how.append(f"matmul rate {tflops:g} TFLOP/s given")
    if bandwidth_gbs is None:
        x = torch.empty(32 << 20, device=dev)
        y = torch.empty_like(x)
        bandwidth = _rate(dev, lambda: y.copy_(x), 2.0 * x.numel() * 4, 0.2)
        how.append("copy bandwidth measured now (128 MiB copies, 0.2 s)")
    else:
        bandwidth = bandwidth_gbs * GB
        how.append(f"bandwidth {bandwidth_gbs:g} GB/s given")
    return DeviceInfo(dev.type, name, free, total, flops, bandwidth, "; ".join(how))


@dataclass(frozen=True)
class StageEstimate:
    """One stage: where it runs, its memory components (bytes) and estimated seconds per run."""

    name: str
    runs: str
    memory: dict[str, Num]
    seconds: Num | None
    count: int = 1
    knobs: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> Num:
        return sum(self.memory.values())


def _bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def epochs_of(setting: Setting, sizes: RunSizes, kind: str) -> int:
    """Training epochs of ``kind`` (``prosv``/``fssv``): the override, else the setting's."""
    if sizes.epochs is not None:
        return sizes.epochs
    return int(dict(getattr(setting, kind)).get("epochs", 12))


class _Model:
    """FLOP and memory arithmetic of one shape in one dtype."""

    def __init__(
        self, setting: Setting, shape: ModelShape | None = None, dtype: str | None = None
    ) -> None:
        self.s = shape or setting.shape
        self.b = _bytes(dtype or setting.dtype)
        self.weights = self.s.n_params * self.b

    def fwd(self, tokens: Num, layers: int, ctx: Num) -> Num:
        """Forward FLOPs of ``layers`` blocks over ``tokens`` tokens attending to ``ctx`` each."""
        s = self.s
        return tokens * layers * (2 * s.block_params + 4 * s.n_heads * s.head_dim * ctx)

    def unembed(self, tokens: Num) -> Num:
        return 2.0 * self.s.d_model * self.s.d_vocab * tokens

    def kv(self, rows: int, tokens: int) -> Num:
        s = self.s
        return 2.0 * s.n_layers * s.n_kv_heads * s.head_dim * tokens * rows * self.b


def _generation_seconds(
    m: _Model, dev: DeviceInfo, answers: int, batches: int, prompt: int, new: int, rows: int
) -> Num:
    s = m.s
    prefill = answers * (m.fwd(prompt, s.n_layers, prompt / 2) + m.unembed(prompt))
    step = rows * (m.fwd(1, s.n_layers, prompt + new / 2) + m.unembed(1))
    per_step = max(step / dev.flops, m.weights / dev.bandwidth)
    if dev.type != "cpu":
        per_step += s.n_layers * GPU_STEP_OVERHEAD
    return prefill / (EFFICIENCY * dev.flops) + batches * new * per_step


def _train(
    setting: Setting, sizes: RunSizes, dev: DeviceInfo, res: Resources, k: int, kind: str
) -> StageEstimate:
    m, s = _Model(setting), setting.shape
    p, r = PROMPT_TOKENS, sizes.max_response_tokens
    t, rows = p + r, k * sizes.n_train
    up, low = s.n_layers - setting.layer - 1, setting.layer + 1
    per_token_layer = (
        m.b * (4 * s.d_model + (2 * s.n_heads + 2 * s.n_kv_heads) * s.head_dim + 3 * s.d_mlp)
        + 4 * 2 * s.n_heads * t
    )
    per_row = t * (up * per_token_layer + s.d_model * (4 + m.b))
    cache = min(rows * t * s.d_model * 4, res.cache_budget_mb * 2**20)
    logits = res.logits_budget_mb * 2**20
    micro, label = res.micro_rows, ""
    if micro is None and dev.type == "cpu":
        micro = 8  # the trainer's CPU default
    elif micro is None:  # the trainer's own rule for an accelerator (default_micro_rows)
        free = max(0, int(dev.memory - m.weights - cache))
        micro = default_micro_rows(
            torch.device("cuda"),
            tokens_per_row=t,
            bytes_per_token=math.ceil(per_row / t),
            reserved_bytes=logits,
            free_bytes=free,
        )
        micro = min(micro, k * sizes.batch_size)
        label = "; the trainer's rule"
    memory: dict[str, Num] = {
        "weights": m.weights,
        "residual cache": cache,
        f"activations ({micro} rows x {t} tokens{label})": micro * per_row,
        "response logits chunk": min(logits, micro * r * s.d_vocab * 16),
    }
    epochs = epochs_of(setting, sizes, kind)
    flops = epochs * (2 * m.fwd(rows * t, up, t / 2) + 2 * m.unembed(rows * r))
    flops += m.fwd(rows * t, low, t / 2)
    runs = f"once: {k} concepts in one pass, {rows} rows x {epochs} epochs"
    knobs = {
        "micro_rows": micro,
        "cache_budget_mb": res.cache_budget_mb,
        "logits_budget_mb": res.logits_budget_mb,
    }
    return StageEstimate(f"train {kind}", runs, memory, flops / (EFFICIENCY * dev.flops), 1, knobs)


def _judge_memory(setting: Setting, judge: str, prompt: int, new: int) -> dict[str, Num]:
    if judge != "offline":
        return {}
    own = setting.model == "smollm2-135m-instruct"
    ref = _Model(setting, SMOLLM2_135M, "float32")
    out = {"judge (MiniLM)": MINILM_BYTES}
    if not own:
        out["judge fluency reference (SmolLM2, fp32)"] = ref.weights
    out["judge NLL logits"] = 8 * (prompt + min(new, JUDGE_TOKENS)) * ref.s.d_vocab * 4
    return out


def _steering(
    setting: Setting, sizes: RunSizes, dev: DeviceInfo, k: int, judge: str
) -> StageEstimate:
    m, s = _Model(setting), setting.shape
    n_sel = int(round(sizes.n_eval * 0.5))
    n_test = sizes.n_eval - n_sel
    rows = min(sizes.eval_batch_size, max(n_sel, n_test))
    f = len(setting.diffmean_factors)
    answers = n_sel * f + N_METHODS_SCORED * n_test
    batches = f * math.ceil(n_sel / rows) + N_METHODS_SCORED * math.ceil(n_test / rows)
    prompt, new = PROMPT_TOKENS + STEERING_PROMPT_TOKENS, sizes.max_new_tokens
    memory = {
        "weights": m.weights,
        f"KV cache ({rows} rows x {prompt + new} tokens)": m.kv(rows, prompt + new),
        "prefill logits": rows * prompt * s.d_vocab * m.b,
        "prefill attention scores": rows * s.n_heads * prompt * prompt * 4,
        **_judge_memory(setting, judge, prompt, new),
    }
    seconds = _generation_seconds(m, dev, answers, batches, prompt, new, rows)
    if judge == "offline":
        ref = _Model(setting, SMOLLM2_135M, "float32")
        judged = prompt + min(new, JUDGE_TOKENS)
        seconds += (
            answers
            * (ref.fwd(judged, ref.s.n_layers, judged / 2) + ref.unembed(judged))
            / (EFFICIENCY * dev.flops)
        )
    runs = f"per concept: {answers} answers x {new} tokens"
    return StageEstimate("steering eval", runs, memory, seconds, k, {"eval_batch_size": rows})


def _utility(
    setting: Setting, sizes: RunSizes, dev: DeviceInfo, k: int, methods: int
) -> StageEstimate:
    m, s = _Model(setting), setting.shape
    items = min(sizes.n_utility or N_BUILTIN_UTILITY, N_BUILTIN_UTILITY)
    rows, prompt, new = sizes.utility_batch_size, UTILITY_PROMPT_TOKENS, sizes.utility_tokens
    kl = sizes.n_kl_prompts if methods > 1 else 0
    memory = {
        "weights": m.weights,
        f"KV cache ({rows} rows x {prompt + new} tokens)": m.kv(rows, prompt + new),
        "teacher-forced logits (2 passes)": 2 * rows * (prompt + new) * s.d_vocab * m.b,
        "log-softmax (float64)": 3 * rows * new * s.d_vocab * 8,
    }
    gen = _generation_seconds(m, dev, items, math.ceil(items / rows), prompt, new, rows)
    kl_gen = _generation_seconds(m, dev, kl, math.ceil(kl / rows), prompt, new, rows) if kl else 0
    forced = (
        2 * kl * (m.fwd(prompt + new, s.n_layers, (prompt + new) / 2) + m.unembed(prompt + new))
    )
    seconds = methods * (gen + kl_gen + forced / (EFFICIENCY * dev.flops))
    name, runs = ("utility", f"per concept: {methods} methods x ({items} items + {kl} KL prompts)")
    if methods == 1:
        name, runs = "utility, unsteered", f"once: {items} items"
    return StageEstimate(name, runs, memory, seconds, k, {"utility_batch_size": rows})


def _diffmean(setting: Setting, sizes: RunSizes, dev: DeviceInfo, k: int) -> StageEstimate:
    m, s = _Model(setting), setting.shape
    t = PROMPT_TOKENS + sizes.max_response_tokens
    memory: dict[str, Num] = {
        "weights": m.weights,
        "activations (8 rows, no grad)": 8
        * t
        * (m.b * (3 * s.d_mlp + 4 * s.d_model) + 4 * s.n_heads * t),
    }
    flops = m.fwd(2 * sizes.n_train * t, setting.layer + 1, t / 2)
    runs = f"per concept: {2 * sizes.n_train} sequences to layer {setting.layer}"
    return StageEstimate("diffmean", runs, memory, flops / (EFFICIENCY * dev.flops), k)


@dataclass(frozen=True)
class Plan:
    """Estimated memory and time of every stage of a run on one device."""

    setting: Setting
    sizes: RunSizes
    resources: Resources
    device: DeviceInfo
    n_concepts: int
    judge: str
    stages: tuple[StageEstimate, ...]

    @property
    def usable(self) -> Num:
        return USABLE * self.device.memory

    @property
    def seconds(self) -> Num:
        return sum((s.seconds or 0.0) * s.count for s in self.stages)

    def misfits(self) -> list[StageEstimate]:
        return [s for s in self.stages if s.peak > self.usable]

    def check(self) -> None:
        """Raise :class:`DeviceFitError` (one line) if a stage does not fit: it names the first
        such stage, what it needs and what there is, and the flags that make every stage fit
        (or the memory a device would need)."""
        bad = self.misfits()
        if not bad:
            return
        stage = bad[0]
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in stage.memory.items() if v >= 0.005 * GB)
        also = "".join(f"; '{s.name}' needs {s.peak / GB:.1f} GB too" for s in bad[1:])
        raise DeviceFitError(
            f"{self.setting.name} does not fit on {self.device.type}: stage '{stage.name}' needs "
            f"{stage.peak / GB:.1f} GB ({parts}) but {self.usable / GB:.1f} GB is usable "
            f"({USABLE:.0%} of {self.device.memory / GB:.1f} GB){also}; {self.suggestion(bad)}"
        )

    def suggestion(self, stages: Sequence[StageEstimate]) -> str:
        """The knob settings that make ``stages`` fit, or the memory a device would need."""
        flags: dict[str, int] = {}
        for stage in stages:
            fix = next(
                (f for f in _candidates(stage) if _peak(self, stage, f) <= self.usable), None
            )
            if fix is None:
                need = max(min(_peak(self, st, f) for f in [{}, *_candidates(st)]) for st in stages)
                return (
                    f"no batch or budget setting makes '{stage.name}' fit (the weights alone "
                    f"are {self.stages[0].peak / GB:.1f} GB in {self.setting.dtype}): use a "
                    f"device with at least {math.ceil(need / USABLE / GB)} GB"
                )
            flags.update(fix)
        return "it fits with " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items())


def _halvings(n: int) -> list[int]:
    out = []
    while n >= 1:
        out.append(n)
        n //= 2
    return out


def _candidates(stage: StageEstimate) -> list[dict[str, int]]:
    k = stage.knobs
    if "micro_rows" in k:
        return [
            {
                "micro_rows": m,
                **({"cache_budget_mb": c} if c != k["cache_budget_mb"] else {}),
                **({"logits_budget_mb": lg} if lg != k["logits_budget_mb"] else {}),
            }
            for c in (k["cache_budget_mb"], 0)
            for lg in (k["logits_budget_mb"], 256, 64)
            for m in _halvings(k["micro_rows"])
        ]
    name, value = next(iter(k.items()), ("", 0))
    return [{name: v} for v in _halvings(value)[1:]]


def _peak(plan: Plan, stage: StageEstimate, flags: dict[str, int]) -> Num:
    """``stage``'s peak memory with the knobs in ``flags`` changed."""
    res = replace(plan.resources, **{k: v for k, v in flags.items() if hasattr(plan.resources, k)})
    sizes = replace(plan.sizes, **{k: v for k, v in flags.items() if hasattr(plan.sizes, k)})
    again = plan_run(
        plan.setting, sizes, plan.device, res, n_concepts=plan.n_concepts, judge=plan.judge
    )
    return next(s for s in again.stages if s.name == stage.name).peak


def plan_run(
    setting: Setting,
    sizes: RunSizes,
    device: DeviceInfo,
    resources: Resources,
    *,
    n_concepts: int,
    judge: str = "offline",
) -> Plan:
    """Every stage of a reproduce run of ``n_concepts`` concepts, estimated for ``device``."""
    m = _Model(setting)
    load = StageEstimate("load model", "once", {"weights": m.weights}, None)
    k = n_concepts
    stages = (
        load,
        _train(setting, sizes, device, resources, k, "prosv"),
        _train(setting, sizes, device, resources, k, "fssv"),
        _diffmean(setting, sizes, device, k),
        _steering(setting, sizes, device, k, judge),
        _utility(setting, sizes, device, 1, 1),
        _utility(setting, sizes, device, k, 4),
    )
    return Plan(setting, sizes, resources, device, k, judge, stages)
