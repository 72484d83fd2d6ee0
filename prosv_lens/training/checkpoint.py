"""Checkpoints of a training run: saved atomically, resumed exactly, never mixed.

A checkpoint holds the step, the settings, a fingerprint of what the run trains on and, per
concept, ``alpha``, ``v``, the optimizer and schedule states and the log so far. Data order is a
pure function of (seed, concept, epoch), so no random state needs saving: a resumed run continues
bit for bit.

The fingerprint names the model (id, width, depth, dtype, chat template and a hash of its
embedding matrix), each concept's data (a hash of its prompts, responses and negatives) and the
package version. A resume with another model, other data, other result-changing settings or
another prosv-lens version is refused with one line saying what differs.
"""

import hashlib
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from prosv_lens._version import __version__
from prosv_lens.concepts import ConceptData
from prosv_lens.errors import ResultFileError, RunMismatchError
from prosv_lens.models import LoadedModel
from prosv_lens.safe_io import atomic_write, describe_differences, differences, normalise
from prosv_lens.training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"

# Settings that change memory use or speed, not what is computed (up to float rounding): a run
# may resume under other values, and a checkpoint written before they existed still resumes.
_SPEED_ONLY = ("logits_budget_mb", "pad_multiple", "compile")


def data_hash(data: ConceptData) -> str:
    """sha256 of a concept's training examples (prompts, responses, negatives), in order."""
    h = hashlib.sha256()
    for part in (data.prompts, data.responses, data.negatives or ()):
        for text in part:
            h.update(text.encode() if isinstance(text, str) else repr(text).encode())
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()


def model_fingerprint(model: LoadedModel) -> dict[str, Any]:
    """What identifies the model a vector is trained in: id, sizes, dtype, chat template and a
    hash of (the first rows of) its token embedding, so a same-named folder with other weights
    is told apart too."""
    hf = model.bridge.original_model
    assert isinstance(hf, PreTrainedModel), "the bridge wraps a Hugging Face model"
    embed = hf.get_input_embeddings().weight
    assert isinstance(embed, torch.Tensor), "the input embedding has a weight matrix"
    rows = embed[:64].detach().float().cpu().contiguous()
    return {
        "model_id": model.model_id,
        "d_model": model.d_model,
        "n_layers": model.n_layers,
        "dtype": str(model.dtype).removeprefix("torch."),
        "chat_template": model.chat_template_hash,
        "embedding_sha256": hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16],
    }


def fingerprint(
    model: LoadedModel, cfg: TrainConfig, data: Sequence[ConceptData]
) -> dict[str, Any]:
    """Everything a resumed run must share with the run that wrote the checkpoint."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _SPEED_ONLY}
    return normalise(
        {
            "model": model_fingerprint(model),
            "settings": settings,
            "data": {d.name: data_hash(d) for d in data},
            "package_version": __version__,
        }
    )


def state_dict(fp: dict[str, Any], concepts: Sequence[Any], step: int) -> dict[str, Any]:
    """Everything needed to resume: step, fingerprint, and per concept alpha, v, optimizer,
    schedule, log."""
    return {
        "step": step,
        "fingerprint": fp,
        "concepts": {
            c.data.name: {
                "alpha": c.alpha.detach().cpu(),
                "v": c.v.detach().cpu(),
                "optimizer": c.optimizer.state_dict(),
                "schedule": c.schedule.state_dict(),
                "log": c.log,
            }
            for c in concepts
        },
    }


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically (a uniquely named temporary file, then rename)."""
    atomic_write(folder / CHECKPOINT, lambda tmp: torch.save(state, tmp))


def _load(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise ResultFileError(
            f"{path} is not a readable checkpoint ({first}): delete it to start the run afresh"
        ) from e
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise ResultFileError(
            f"{path} holds no run fingerprint (written by an older prosv-lens, or not a "
            "checkpoint): delete it to start the run afresh"
        )
    return state


def resume(folder: Path, fp: dict[str, Any], concepts: Sequence[Any]) -> int:
    """Restore the state saved in ``folder`` into ``concepts``; returns the step to continue from
    (0 without a checkpoint).

    Raises:
        RunMismatchError: the checkpoint was written with another model, data, settings or
            package version (the message names what differs).
        ResultFileError: the file is corrupt or not a checkpoint.
    """
    path = folder / CHECKPOINT
    if not path.exists():
        return 0
    state = _load(path)
    diff = differences(state["fingerprint"], fp)
    if diff:
        raise RunMismatchError(
            f"{path} was written by another run ({describe_differences(diff, 4)}): use another "
            "checkpoint folder, or delete it to start afresh"
        )
    for c in concepts:
        s = state["concepts"][c.data.name]
        with torch.no_grad():
            c.alpha.copy_(s["alpha"])
            c.v.copy_(s["v"])
        c.optimizer.load_state_dict(s["optimizer"])
        c.schedule.load_state_dict(s["schedule"])
        c.log = list(s["log"])
    return int(state["step"])
