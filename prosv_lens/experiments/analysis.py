"""Run the mechanism analyses of one prompt-only vector end to end and save every result.

:func:`run_attention_analysis` builds the paired sequences once (the steered model's greedy
answers to the prompts), runs the chosen analyses on them and writes each result with
:meth:`SavedResult.save` under one folder, plus ``index.json``: what ran, how long it took, the
vector, the prompts and the answers. :func:`prosv_lens.figures.regenerate_figures` redraws the
figures from that folder without a model. Notebook: ``notebooks/03_attention_flow.py``.

Analyses (``what``) and the files they write:

* ``flow`` -> ``flow``: :func:`attention_flow` at every layer above ``L`` (2 passes);
* ``patching`` -> ``patching``: :func:`path_patching`'s default sweep — all layers above ``L``
  for ``k``, ``v``, ``kv``; each single layer for ``kv``; every key/value head of the
  ``top_layers`` layers whose restore removes most — in both modes (``2 + 2 * patches`` passes);
* ``knockout`` -> ``knockout_renorm`` and ``knockout_plain``: :func:`knockout` at every layer above
  ``L``, with and without renormalisation (8 passes);
* ``decay`` -> ``decay``: :func:`effect_decay` of the vector and of each ``compare`` vector, each on
  its own greedy answer (one generation and 2 passes per variant);
* ``lens`` -> ``vector_lens``, ``residual_lens``: :func:`vector_logit_lens` and
  :func:`residual_diff_lens` at the last layer (2 passes);
* ``heads`` -> ``heads``: :func:`head_attribution` at every layer above ``L`` (2 passes).
"""

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prosv_lens.analysis.attention_flow import attention_flow
from prosv_lens.analysis.decay import effect_decay, prosv_vs_fssv
from prosv_lens.analysis.knockout import knockout
from prosv_lens.analysis.logit_lens import head_attribution, residual_diff_lens, vector_logit_lens
from prosv_lens.analysis.paired import PairedSequences, pair_sequences
from prosv_lens.analysis.path_patching import path_patching
from prosv_lens.analysis.results import SavedResult
from prosv_lens.errors import ConfigError, OutputError
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import Prompt, TokenBatch
from prosv_lens.safe_io import RunLock, check_writable, read_json, write_text

ANALYSES = ("flow", "patching", "knockout", "decay", "lens", "heads")
INDEX = "index.json"


def _check(what: Sequence[str], max_new_tokens: int, top_layers: int) -> tuple[str, ...]:
    """The analyses to run, in :data:`ANALYSES` order.

    Raises:
        TypeError: ``what`` is a string.
        ConfigError: ``what`` is empty or names an unknown analysis, or
            ``max_new_tokens`` / ``top_layers`` is not a whole number in range.
    """
    if isinstance(what, str):  # a programming error, not user input: the CLI passes a list
        raise TypeError(f"what must be a sequence of analysis names, got the string {what!r}")
    unknown = sorted(set(what) - set(ANALYSES))
    if unknown or not what:
        raise ConfigError(
            f"unknown or no analyses {unknown or list(what)}: choose from {', '.join(ANALYSES)}"
        )
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 2
    ):
        raise ConfigError(
            f"max_new_tokens must be >= 2 (a target per position), got {max_new_tokens!r}: "
            "pass --max-new-tokens 2 or more"
        )
    if isinstance(top_layers, bool) or not isinstance(top_layers, int) or top_layers < 0:
        raise ConfigError(f"top_layers must be a whole number >= 0, got {top_layers!r}")
    return tuple(a for a in ANALYSES if a in what)


_ABOVE_L = ("flow", "patching", "knockout", "heads")  # analyses of the layers above the vector's


def _check_layer(model: LoadedModel, vector: SteeringVector, todo: Sequence[str]) -> None:
    """The analyses of :data:`_ABOVE_L` need a layer above the vector's.

    Raises:
        ConfigError: one of them is asked for a vector at the model's last layer.
    """
    last = model.n_layers - 1
    above = [a for a in todo if a in _ABOVE_L]
    if above and vector.layer >= last:
        raise ConfigError(
            f"the vector steers layer {vector.layer}, the last of {model.model_id}: "
            f"{', '.join(above)} look at the layers above it; analyse a vector at a layer below "
            f"{last}, or run only --what decay lens"
        )


def _describe(vector: SteeringVector) -> dict[str, Any]:
    return {
        "model_id": vector.model_id,
        "layer": vector.layer,
        "positions": str(vector.positions),
        "alpha": float(vector.alpha),
        "v_norm": float(vector.v.detach().norm()),
    }


def run_attention_analysis(
    model: LoadedModel,
    vector: SteeringVector,
    prompts: "TokenBatch | Sequence[Prompt]",
    out_dir: str | Path,
    *,
    max_new_tokens: int = 64,
    what: Sequence[str] = ANALYSES,
    compare: Mapping[str, SteeringVector] | None = None,
    top_layers: int = 2,
    lens_k: int = 20,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run ``what`` on the steered greedy answers to ``prompts`` and save every result.

    Args:
        model: the model.
        vector: the prompt-only vector to analyse (any position spec works; the analyses are
            about how an edit of some columns reaches the others).
        prompts: instructions (or a prompt batch); a handful keeps CPU runs to minutes.
        out_dir: folder for the results and ``index.json``: new or empty, or holding an earlier
            analysis that ``overwrite`` allows to replace (its files are removed first, so
            results of two runs never mix). Locked while the analysis runs.
        max_new_tokens: length cap of the greedy answers.
        what: analyses to run, from :data:`ANALYSES`.
        compare: extra vectors for ``decay`` (name -> vector, e.g. a trained FSSV of the same
            concept). ``None`` compares with the same direction at every token
            (:func:`prosv_vs_fssv`).
        top_layers: layers that get a per-head path-patching sweep.
        lens_k: promoted/suppressed tokens kept by the logit lenses.
        log: called with one line after each analysis (e.g. ``print``).
        overwrite: replace the results of an earlier analysis in ``out_dir``.

    Returns:
        The index also written to ``out_dir/index.json``: ``{"vector", "prompts", "answers",
        "max_new_tokens", "results": {file stem: {"kind", "analysis", "seconds"}}, "seconds"}``.
        The model's weights are never modified and no hook stays attached.

    Raises:
        ConfigError: an unknown analysis, ``max_new_tokens`` < 2, ``top_layers`` < 0, or a
            vector at the model's last layer (nothing above it to analyse).
        OutputError: ``out_dir`` holds other files, or an earlier analysis and not
            ``overwrite``; it cannot be written; another run is working in it.
    """
    todo = _check(what, max_new_tokens, top_layers)
    _check_layer(model, vector, todo)
    out = Path(out_dir)
    _check_out(out, overwrite)
    t_start = time.perf_counter()
    seq = pair_sequences(model, prompts, vector, max_new_tokens=max_new_tokens)
    check_writable(out)  # after the prompts and the vector proved usable
    with RunLock(out):
        _clear(out)
        return _run_all(
            model,
            vector,
            prompts,
            out,
            seq,
            todo,
            t_start,
            max_new_tokens,
            compare,
            top_layers,
            lens_k,
            log,
        )


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file, not a folder: choose another --out")
    held = [p.name for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if held and not (out / INDEX).exists():
        raise OutputError(
            f"{out} holds other files ({', '.join(sorted(held)[:3])}): choose an empty --out"
        )
    if held and not overwrite:
        raise OutputError(
            f"{out} holds an earlier analysis ({INDEX}): pass --force (overwrite=True) to "
            "replace it, or choose another --out"
        )


def _clear(out: Path) -> None:
    """Remove an earlier analysis's files (those its index names, then the index)."""
    old = read_json(out / INDEX)
    for stem in (old or {}).get("results", {}):
        for suffix in (".json", ".npz"):
            (out / f"{stem}{suffix}").unlink(missing_ok=True)
    (out / INDEX).unlink(missing_ok=True)


def _run_all(
    model: LoadedModel,
    vector: SteeringVector,
    prompts: "TokenBatch | Sequence[Prompt]",
    out: Path,
    seq: PairedSequences,
    todo: tuple[str, ...],
    t_start: float,
    max_new_tokens: int,
    compare: Mapping[str, SteeringVector] | None,
    top_layers: int,
    lens_k: int,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """The analyses in ``todo`` on ``seq``, each saved as it finishes (see the caller)."""
    texts = prompts.texts if isinstance(prompts, TokenBatch) else tuple(map(str, prompts))
    index: dict[str, Any] = {
        "vector": _describe(vector),
        "model_id": model.model_id,
        "prompts": list(texts),
        "answers": list(seq.texts),
        "max_new_tokens": max_new_tokens,
        "pairing_seconds": round(time.perf_counter() - t_start, 1),
        "results": {},
    }
    if log:
        log(f"paired sequences: {seq.batch.batch_size} rows x {seq.n_gen} answer tokens")

    def keep(stem: str, analysis: str, run: Callable[[], SavedResult]) -> None:
        t0 = time.perf_counter()
        result = run()
        result.save(out / stem)
        seconds = round(time.perf_counter() - t0, 1)
        index["results"][stem] = {
            "kind": type(result).__name__,
            "analysis": analysis,
            "seconds": seconds,
        }
        write_text(out / INDEX, json.dumps(index, indent=1))  # a partial run stays usable
        if log:
            log(f"{stem}: {seconds} s")

    variants = {"prosv": vector, **compare} if compare is not None else prosv_vs_fssv(vector)
    steps: dict[str, list[tuple[str, Callable[[], SavedResult]]]] = {
        "flow": [("flow", lambda: attention_flow(model, seq, vector))],
        "patching": [
            ("patching", lambda: path_patching(model, seq, vector, top_layers=top_layers))
        ],
        "knockout": [
            ("knockout_renorm", lambda: knockout(model, seq, vector, renormalize=True)),
            ("knockout_plain", lambda: knockout(model, seq, vector, renormalize=False)),
        ],
        "decay": [
            ("decay", lambda: effect_decay(model, prompts, variants, max_new_tokens=max_new_tokens))
        ],
        "lens": [
            ("vector_lens", lambda: vector_logit_lens(model, vector, k=lens_k)),
            ("residual_lens", lambda: residual_diff_lens(model, seq, vector, k=lens_k)),
        ],
        "heads": [("heads", lambda: head_attribution(model, seq, vector))],
    }
    for analysis in todo:
        for stem, run in steps[analysis]:
            keep(stem, analysis, run)
    index["seconds"] = round(time.perf_counter() - t_start, 1)
    write_text(out / INDEX, json.dumps(index, indent=1))
    return index
