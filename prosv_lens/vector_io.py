"""Save and load steering vectors with full provenance.

A vector ``name`` is two files: ``name.safetensors`` (tensors ``v`` ``[d_model]`` and ``alpha``
``[]``) and ``name.json`` (everything else: model id and d_model, layer, hook, position spec,
alpha, chat-template hash, package version, free-form ``info``, and the sha256 of the tensor
file). Loading checks the format, the hash (a corrupt or swapped tensor file fails), and — when a
model is given — that the vector fits it (d_model always; model id and chat template unless
``allow_model_mismatch=True``).
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prosv_lens._version import __version__
from prosv_lens.errors import PositionSpecError, VectorFileError, VectorMismatchError
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.safe_io import atomic_write

FORMAT = "prosv-lens/steering-vector"
FORMAT_VERSION = 1


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_vector(vector: SteeringVector, path: str | Path) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns the ``.safetensors`` path.

    Each file is written atomically (temporary file, then rename), the tensors first, so an
    interrupted save never leaves a JSON pointing at a half-written tensor file.
    """
    tensor_path, meta_path = _paths(path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "v": vector.v.detach().float().cpu().contiguous(),
        "alpha": vector.alpha.detach().float().cpu().reshape(()),
    }
    atomic_write(tensor_path, lambda tmp: save_file(tensors, tmp))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_id": vector.model_id,
        "d_model": vector.d_model,
        "layer": vector.layer,
        "hook_name": vector.hook_name,
        "positions": str(vector.positions),
        "alpha": float(vector.alpha),
        "v_norm": float(vector.v.norm()),
        "chat_template_hash": vector.chat_template_hash,
        "package_version": __version__,
        "info": vector.info,
        "tensors_file": tensor_path.name,
        "tensors_sha256": _sha256(tensor_path),
    }
    atomic_write(
        meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str))
    )
    return tensor_path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON provenance of a saved vector (no tensors loaded, no checks beyond parsing)."""
    _, meta_path = _paths(path)
    if not meta_path.exists():
        raise VectorFileError(
            f"{meta_path} not found: a saved vector is a .safetensors + .json pair"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VectorFileError(
            f"{meta_path} is not valid JSON ({e}): the file is corrupt; re-save the vector"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VectorFileError(
            f"{meta_path} is not a prosv-lens steering vector (format != {FORMAT!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise VectorFileError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this prosv-lens "
            f"({__version__}) reads version {FORMAT_VERSION}: upgrade prosv-lens"
        )
    return meta


def load_vector(
    path: str | Path,
    model: LoadedModel | None = None,
    *,
    allow_model_mismatch: bool = False,
) -> SteeringVector:
    """Load a vector saved by :func:`save_vector`, optionally checking it fits ``model``.

    Raises:
        VectorFileError: a file is missing, corrupt, modified after saving, or of another format.
        VectorMismatchError: ``model`` has another d_model (always an error), or another model
            id / chat template (an error unless ``allow_model_mismatch``).
    """
    tensor_path, meta_path = _paths(path)
    meta = read_metadata(path)
    if not tensor_path.exists():
        raise VectorFileError(f"{tensor_path} not found (its metadata {meta_path.name} exists)")
    if _sha256(tensor_path) != meta.get("tensors_sha256"):
        raise VectorFileError(
            f"{tensor_path} does not match the sha256 recorded in {meta_path.name}: the tensor "
            "file is corrupt or was replaced; re-save the vector"
        )
    try:
        tensors = load_file(str(tensor_path))
        v, alpha = tensors["v"], tensors["alpha"]
    except (SafetensorError, KeyError, OSError) as e:
        raise VectorFileError(
            f"{tensor_path} is not a readable steering-vector tensor file: {e}"
        ) from e
    if v.ndim != 1 or v.shape[0] != meta["d_model"] or not bool(torch.isfinite(v).all()):
        raise VectorFileError(f"{tensor_path}: v has shape {tuple(v.shape)} or non-finite values")
    try:
        vector = SteeringVector(
            v,
            layer=int(meta["layer"]),
            positions=meta["positions"],
            alpha=alpha,
            model_id=meta.get("model_id"),
            chat_template_hash=meta.get("chat_template_hash"),
            info=meta.get("info") or {},
        )
    except (KeyError, ValueError, PositionSpecError) as e:
        raise VectorFileError(f"{meta_path}: invalid metadata ({e})") from e
    if model is not None:
        check_fits(vector, model, allow_model_mismatch=allow_model_mismatch)
    return vector.to(model.device) if model is not None else vector


def check_fits(
    vector: SteeringVector, model: LoadedModel, *, allow_model_mismatch: bool = False
) -> None:
    """Raise :class:`VectorMismatchError` if ``vector`` was made for a different model."""
    if vector.d_model != model.d_model:
        raise VectorMismatchError(
            f"the vector has d_model {vector.d_model} (made for {vector.model_id!r}) but "
            f"{model.model_id} has d_model {model.d_model}: it cannot be applied to this model"
        )
    if vector.layer >= model.n_layers:
        raise VectorMismatchError(
            f"the vector edits layer {vector.layer} but {model.model_id} has {model.n_layers} layers"
        )
    if allow_model_mismatch:
        return
    if vector.model_id is not None and vector.model_id != model.model_id:
        raise VectorMismatchError(
            f"the vector was made for {vector.model_id!r}, not {model.model_id!r}; pass "
            "allow_model_mismatch=True to apply it anyway (same width, different model)"
        )
    ours = vector.chat_template_hash
    if ours is not None and not vector.positions.is_prompt_only:
        return  # an FSSV edits every token: the template does not move its positions
    if ours is not None and ours != model.chat_template_hash:
        raise VectorMismatchError(
            f"the vector's positions ('{vector.positions}') were chosen for chat template "
            f"{ours}, but {model.model_id} uses {model.chat_template_hash}; pass "
            "allow_model_mismatch=True to apply it anyway"
        )
