"""Save and load steering vectors with full provenance.

A vector ``name`` is two files: ``name.safetensors`` (tensors ``v`` ``[d_model]`` and ``alpha``
``[]``) and ``name.json`` (everything else: model id and d_model, layer, hook, position spec,
alpha, chat-template hash, package version, free-form ``info``, the sha256 of the tensor file,
and ``metadata_sha256`` over all of that). Loading checks the format, both hashes (a corrupt or
swapped tensor file, or a JSON edited after saving, fails), that the JSON agrees with the tensors,
that nothing is NaN/inf, and — when a model is given — that the vector fits it (d_model and layer
always; model id and chat template unless ``allow_model_mismatch=True``). Saving never replaces an
existing vector unless asked to (``overwrite=True``).
"""

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prosv_lens._version import __version__
from prosv_lens.concepts import concept_slug
from prosv_lens.errors import OutputError, VectorFileError, VectorMismatchError
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel, hook_name
from prosv_lens.safe_io import atomic_write, check_writable, normalise, sha256_json, write_text
from prosv_lens.validate import finite, finite_tensor

FORMAT = "prosv-lens/steering-vector"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before metadata_sha256; still read, with the consistency checks


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata_hash(meta: dict[str, Any]) -> str:
    return sha256_json({k: v for k, v in meta.items() if k != "metadata_sha256"})


def vector_exists(path: str | Path) -> bool:
    """Whether either file of the vector ``path`` exists."""
    return any(p.exists() for p in _paths(path))


def save_vector(vector: SteeringVector, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns the ``.safetensors`` path.

    Each file is written atomically (temporary file, then rename), the tensors first, so an
    interrupted save never leaves a JSON pointing at a half-written tensor file. The JSON's
    ``metadata_sha256`` covers every other field (and through ``tensors_sha256`` the tensors),
    so an edit of the layer, positions or alpha after saving is detected on load.

    Raises:
        OutputError: a vector already exists at ``path`` and ``overwrite`` is false.
        ConfigError: ``alpha`` or ``v`` holds NaN/inf (nothing is written).
    """
    tensor_path, meta_path = _paths(path)
    if not overwrite and vector_exists(path):
        raise OutputError(
            f"a vector already exists at {tensor_path.with_suffix('')}: pass overwrite=True "
            "(--force on the CLI) or choose another name"
        )
    v = finite_tensor("v", vector.v.detach().float().cpu().contiguous(), "refusing to save it")
    alpha = vector.alpha.detach().float().cpu().reshape(())
    finite("alpha", alpha)
    atomic_write(tensor_path, lambda tmp: save_file({"v": v, "alpha": alpha}, tmp))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_id": vector.model_id,
        "d_model": vector.d_model,
        "layer": vector.layer,
        "hook_name": vector.hook_name,
        "positions": str(vector.positions),
        "alpha": float(alpha),
        "v_norm": float(v.norm()),
        "chat_template_hash": vector.chat_template_hash,
        "package_version": __version__,
        "info": normalise(vector.info),
        "tensors_file": tensor_path.name,
        "tensors_sha256": _sha256(tensor_path),
    }
    meta["metadata_sha256"] = _metadata_hash(meta)
    write_text(meta_path, json.dumps(meta, indent=2))
    return tensor_path


def plan_saves(
    folder: str | Path, names: Sequence[str], *, overwrite: bool = False
) -> dict[str, Path]:
    """Where each named vector will be saved in ``folder``, checked before any work.

    Raises:
        OutputError: ``folder`` cannot be written, two names map to one file, or a vector is
            already there and ``overwrite`` is false.
    """
    folder = check_writable(folder, create=False)
    paths = {name: folder / concept_slug(name)[:60] for name in names}
    seen: dict[Path, str] = {}
    for name, path in paths.items():
        if path in seen:
            raise OutputError(
                f"concepts {seen[path]!r} and {name!r} would both be saved as {path}: rename one"
            )
        seen[path] = name
    existing = [str(p) for p in paths.values() if vector_exists(p)]
    if existing and not overwrite:
        raise OutputError(
            f"{len(existing)} vector(s) already exist ({', '.join(existing[:3])}): pass --force "
            "(overwrite=True) to replace them, or choose another --out"
        )
    return paths


def save_all(
    vectors: Mapping[str, SteeringVector], paths: Mapping[str, Path], *, overwrite: bool = False
) -> dict[str, Path]:
    """Save each vector at its planned path (see :func:`plan_saves`).

    If a save fails (disk full, folder removed, permissions changed during training), every
    vector is saved into a fresh temporary folder instead and the error names it, so trained
    vectors are never lost.

    Raises:
        OutputError: the planned saves failed; the message says where the vectors are now.
    """
    try:
        return {
            name: save_vector(vec, paths[name], overwrite=overwrite)
            for name, vec in vectors.items()
        }
    except OSError as e:
        rescue = Path(tempfile.mkdtemp(prefix="prosv-rescued-vectors-"))
        for name, vec in vectors.items():
            save_vector(vec, rescue / concept_slug(name)[:60])
        raise OutputError(
            f"saving the vectors failed ({type(e).__name__}: {e.strerror or e}); all "
            f"{len(vectors)} were saved in {rescue} instead: move them where you want them"
        ) from e


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON provenance of a saved vector (no tensors loaded, no checks beyond parsing)."""
    _, meta_path = _paths(path)
    if Path(path).is_dir():
        raise VectorFileError(
            f"{path} is a folder: pass a saved vector's name (the .safetensors/.json stem)"
        )
    if not meta_path.exists():
        raise VectorFileError(
            f"{meta_path} not found: a saved vector is a .safetensors + .json pair"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VectorFileError(
            f"{meta_path} is not valid JSON ({e}): the file is corrupt; re-save the vector"
        ) from e
    except OSError as e:
        raise VectorFileError(f"{meta_path} cannot be read ({e.strerror or e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VectorFileError(
            f"{meta_path} is not a prosv-lens steering vector (format != {FORMAT!r})"
        )
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise VectorFileError(
            f"{meta_path} has format_version {meta.get('format_version')!r}; this prosv-lens "
            f"({__version__}) reads versions {READABLE_VERSIONS}: upgrade prosv-lens"
        )
    return meta


def _check_metadata(
    meta: dict[str, Any], meta_path: Path, v: torch.Tensor, alpha: torch.Tensor
) -> None:
    """The metadata hash (format 2) and the self-consistency of the fields that change behaviour."""
    if meta["format_version"] >= 2 and meta.get("metadata_sha256") != _metadata_hash(meta):
        raise VectorFileError(
            f"{meta_path} was edited after saving (its metadata_sha256 does not match its "
            "fields): restore the file or re-save the vector"
        )
    problems = []
    if meta.get("d_model") != v.shape[0]:
        problems.append(f"d_model {meta.get('d_model')!r} but v has {v.shape[0]} entries")
    if not isinstance(meta.get("layer"), int) or meta.get("hook_name") != hook_name(meta["layer"]):
        problems.append(
            f"layer {meta.get('layer')!r} and hook_name {meta.get('hook_name')!r} disagree"
        )
    if not isinstance(meta.get("alpha"), (int, float)) or meta["alpha"] != float(alpha):
        problems.append(f"alpha {meta.get('alpha')!r} but the tensor file holds {float(alpha)!r}")
    if problems:
        raise VectorFileError(
            f"{meta_path} contradicts its tensor file ({'; '.join(problems)}): the file was "
            "edited or mixed with another vector's; re-save the vector"
        )


def load_vector(
    path: str | Path,
    model: LoadedModel | None = None,
    *,
    allow_model_mismatch: bool = False,
) -> SteeringVector:
    """Load a vector saved by :func:`save_vector`, optionally checking it fits ``model``.

    Checks, in order: the format, the tensor file's sha256, the metadata hash (format 2), that
    the metadata agrees with the tensors (d_model, alpha, layer and hook name), that every value
    is finite, and — with a model — that the vector fits it.

    Raises:
        VectorFileError: a file is missing, corrupt, edited after saving, self-contradictory,
            holds NaN/inf, or is of another format.
        VectorMismatchError: ``model`` has another d_model or fewer layers (always an error), or
            another model id / chat template (an error unless ``allow_model_mismatch``).
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
    if v.ndim != 1 or alpha.numel() != 1:
        raise VectorFileError(
            f"{tensor_path}: v has shape {tuple(v.shape)}, alpha {tuple(alpha.shape)}"
        )
    if not (bool(torch.isfinite(v).all()) and bool(torch.isfinite(alpha).all())):
        raise VectorFileError(
            f"{tensor_path}: alpha or v holds NaN/inf; retrain or re-save the vector"
        )
    _check_metadata(meta, meta_path, v, alpha)
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
    except (KeyError, TypeError, ValueError) as e:
        raise VectorFileError(f"{meta_path}: invalid metadata ({e})") from e
    if model is not None:
        check_fits(vector, model, allow_model_mismatch=allow_model_mismatch)
    return vector.to(model.device) if model is not None else vector


def describe(vector: SteeringVector, meta: dict[str, Any]) -> list[str]:
    """What :func:`load_vector` verified and what the vector will do, one fact per line."""
    covered = (
        "tensors sha256 and metadata sha256 verified"
        if meta["format_version"] >= 2
        else "tensors sha256 verified; metadata not hash-covered (format 1): re-save to protect it"
    )
    kind = "prompt-only" if vector.positions.is_prompt_only else "also every generated token"
    return [
        f"verified: {covered}; metadata agrees with the tensors",
        f"edits:    {vector.hook_name} at positions '{vector.positions}' ({kind})",
        f"adds:     alpha {float(vector.alpha):.6g} x v (|v| {float(vector.v.norm()):.6g}, "
        f"|alpha v| {float(vector.delta.norm()):.6g}), d_model {vector.d_model}",
        f"model:    {vector.model_id!r}, chat template {vector.chat_template_hash!r}",
    ]


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
