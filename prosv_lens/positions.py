"""Stage 2b — position specs: which tokens a steering vector edits.

A spec is a ``+``-joined union of parts, resolved per example against a :class:`TokenBatch` into
absolute columns (padding never counts):

===================  ==========================================================================
``all``              every real token, prompt and generated (a full-sequence SV, FSSV)
``prompt``           every real prompt token
``f{k}``/``first:k`` the first ``k`` prompt tokens (BOS included)
``l{k}``/``last:k``  the last ``k`` prompt tokens
``idx:i,j,...``      explicit prompt-token indices; negative ones count from the end
``role:R`` / ``R``   the tokens of chat role span ``R``: ``system``, ``user`` (content) or
                     ``assistant`` (the assistant prefix the generation prompt adds)
===================  ==========================================================================

The paper's PrOSV default is ``f2+l2``. Every spec except ``all`` is *prompt-only*: it never
edits a generated token. A prompt too short for a part is an error that names the example.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prosv_lens.errors import PositionSpecError
from prosv_lens.prompts import ROLES, TokenBatch
from prosv_lens.types import PosMask

PROSV_DEFAULT = "f2+l2"
FSSV = "all"
_FORMS = "all, prompt, f{k} / first:k, l{k} / last:k, idx:i,j,..., role:system|user|assistant"


@dataclass(frozen=True)
class _Part:
    kind: str  # all | prompt | first | last | idx | role
    k: int = 0
    indices: tuple[int, ...] = ()
    role: str = ""

    def __str__(self) -> str:
        if self.kind in ("first", "last"):
            return f"{self.kind[0]}{self.k}"
        if self.kind == "idx":
            return "idx:" + ",".join(map(str, self.indices))
        if self.kind == "role":
            return f"role:{self.role}"
        return self.kind


def _parse_part(text: str, spec: str) -> _Part:
    t = text.strip().lower()
    if t in ("all", "prompt"):
        return _Part(t)
    if t in ("all_prompt",):
        return _Part("prompt")
    m = re.fullmatch(r"(?:(f|l)(\d+)|(first|last):(\d+))", t)
    if m:
        k = int(m.group(2) or m.group(4))
        if k < 1:
            raise PositionSpecError(f"{text!r} in spec {spec!r} selects no token: k must be >= 1")
        return _Part("first" if (m.group(1) or m.group(3))[0] == "f" else "last", k=k)
    m = re.fullmatch(r"idx:\s*(-?\d+(?:\s*,\s*-?\d+)*)", t)
    if m:
        return _Part("idx", indices=tuple(sorted({int(x) for x in m.group(1).split(",")})))
    role = t.removeprefix("role:")
    if role in ROLES:
        return _Part("role", role=role)
    raise PositionSpecError(
        f"cannot parse {text!r} in position spec {spec!r}. Valid parts, joined with '+': {_FORMS}. "
        "The paper's prompt-only default is 'f2+l2'."
    )


@dataclass(frozen=True)
class ResolvedPositions:
    """A spec resolved against one batch.

    Attributes:
        mask: True at the columns of the batch that are steered.
        steer_generated: whether columns past the batch (generated tokens) are steered too.
    """

    mask: PosMask
    steer_generated: bool

    def chunk(self, offset: int, width: int) -> PosMask | None:
        """Mask for a forward pass over columns ``[offset, offset + width)``; ``None`` = no edit.

        Columns past the resolved batch are generated tokens: steered only for ``all``.
        """
        known = self.mask.shape[1]
        if offset >= known:
            if not self.steer_generated:
                return None
            return torch.ones(self.mask.shape[0], width, dtype=torch.bool, device=self.mask.device)
        inside = self.mask[:, offset : min(known, offset + width)]
        extra = offset + width - known
        if extra > 0:
            tail = torch.full(
                (self.mask.shape[0], extra), self.steer_generated, device=self.mask.device
            )
            inside = torch.cat([inside, tail], dim=1)
        return inside


@dataclass(frozen=True)
class PositionSpec:
    """A parsed position spec; ``str(spec)`` is its canonical form (``"f2+l2"``)."""

    parts: tuple[_Part, ...]

    @classmethod
    def parse(cls, spec: "str | PositionSpec | Sequence[int]") -> "PositionSpec":
        """Parse ``"f2+l2"``, ``"all"``, ``"role:user"``, ``"idx:0,-1"`` or a list of indices."""
        if isinstance(spec, PositionSpec):
            return spec
        if not isinstance(spec, str):
            if not spec or not all(isinstance(i, int) for i in spec):
                raise PositionSpecError(
                    f"explicit positions must be a non-empty list of ints, not {spec!r}"
                )
            return cls((_Part("idx", indices=tuple(sorted(set(spec)))),))
        if not spec.strip():
            raise PositionSpecError(f"empty position spec. Valid parts, joined with '+': {_FORMS}")
        parts = tuple(_parse_part(p, spec) for p in spec.split("+"))
        if any(p.kind == "all" for p in parts) and len(parts) > 1:
            raise PositionSpecError(f"{spec!r}: 'all' already covers every token; use 'all' alone")
        return cls(parts)

    def __str__(self) -> str:
        return "+".join(str(p) for p in self.parts)

    @property
    def is_prompt_only(self) -> bool:
        """True unless the spec is ``all``: a prompt-only vector acts in prefill only."""
        return not any(p.kind == "all" for p in self.parts)

    def resolve(self, batch: TokenBatch) -> ResolvedPositions:
        """Absolute steered columns of each example.

        Raises:
            PositionSpecError: an example is too short for a part, an index is out of range, or
                a role span is missing; the message names the example and shows its text.
        """
        mask = torch.zeros_like(batch.prompt_mask)
        for b in range(batch.batch_size):
            cols = batch.prompt_mask[b].nonzero().flatten().tolist()
            for part in self.parts:
                picked = _columns(part, b, cols, batch)
                mask[b, picked] = True
        return ResolvedPositions(mask, steer_generated=not self.is_prompt_only)


def _columns(part: _Part, b: int, cols: list[int], batch: TokenBatch) -> list[int]:
    n = len(cols)

    def fail(why: str) -> PositionSpecError:
        text = batch.texts[b] if b < len(batch.texts) else ""
        shown = (text[:80] + "...") if len(text) > 80 else text
        return PositionSpecError(f"example {b} ({n} prompt tokens, text {shown!r}): {why}")

    if part.kind == "all":
        return batch.attention_mask[b].nonzero().flatten().tolist()
    if part.kind == "prompt":
        if n == 0:
            raise fail("'prompt' needs at least one prompt token")
        return cols
    if part.kind in ("first", "last"):
        if n < part.k:
            raise fail(f"'{part}' needs at least {part.k} prompt tokens; use a smaller k")
        return cols[: part.k] if part.kind == "first" else cols[n - part.k :]
    if part.kind == "idx":
        bad = [i for i in part.indices if not -n <= i < n]
        if bad:
            raise fail(
                f"indices {bad} are out of range; valid prompt-token indices are -{n}..{n - 1}"
            )
        return [cols[i] for i in part.indices]
    spans = batch.role_spans[b].get(part.role, ()) if b < len(batch.role_spans) else ()
    if not spans:
        have = sorted(batch.role_spans[b]) if b < len(batch.role_spans) else []
        raise fail(f"no {part.role!r} role span in this prompt (roles present: {have or 'none'})")
    return [c for s, e in spans for c in range(s, e)]
