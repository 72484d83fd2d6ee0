"""Checkpoints of a training run: saved atomically, resumed exactly.

A checkpoint holds the step, the settings and, per concept, ``alpha``, ``v``, the optimizer and
schedule states and the log so far. Data order is a pure function of (seed, concept, epoch), so
no random state needs saving: a resumed run continues bit for bit.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prosv_lens.safe_io import atomic_write
from prosv_lens.training.config import TrainConfig


def state_dict(cfg: TrainConfig, concepts: Sequence[Any], step: int) -> dict[str, Any]:
    """Everything needed to resume: step, settings, and per concept alpha, v, optimizer, schedule, log."""
    return {
        "step": step,
        "config": cfg.to_dict(),
        "concepts": {
            c.data.name: {
                "alpha": c.alpha.detach().cpu(), "v": c.v.detach().cpu(),
                "optimizer": c.optimizer.state_dict(), "schedule": c.schedule.state_dict(), "log": c.log,
            }
            for c in concepts
        },
    }  # fmt: skip


# Settings that change memory use or speed, not what is computed (up to float rounding): a run
# may resume under other values, and a checkpoint written before they existed still resumes.
_SPEED_ONLY = ("logits_budget_mb", "pad_multiple", "compile")


def _results_settings(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _SPEED_ONLY}


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically (temporary file, then rename)."""
    atomic_write(folder / "checkpoint.pt", lambda tmp: torch.save(state, tmp))


def resume(folder: Path, cfg: TrainConfig, concepts: Sequence[Any]) -> int:
    """Restore the state saved in ``folder`` into ``concepts``; returns the step to continue from
    (0 without a checkpoint). Raises ValueError for a checkpoint of other settings or concepts."""
    path = folder / "checkpoint.pt"
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=False)
    saved = _results_settings(TrainConfig.from_dict(state["config"]))
    if saved != _results_settings(cfg) or set(state["concepts"]) != {c.data.name for c in concepts}:
        raise ValueError(
            f"{path} was written by a run with other settings or concepts; use another "
            "checkpoint_dir or delete it to start afresh"
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
