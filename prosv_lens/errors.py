"""Exceptions raised by prosv-lens. Each message names the problem and the fix."""


class ProsvError(Exception):
    """Base class for every error prosv-lens raises on bad input."""


class ModelLoadError(ProsvError):
    """A model could not be found, converted or booted."""


class PositionSpecError(ProsvError, ValueError):
    """A position spec is malformed, or does not fit a prompt."""


class PromptError(ProsvError, ValueError):
    """Prompts could not be rendered or tokenised."""


class VectorMismatchError(ProsvError, ValueError):
    """A steering vector does not belong to the model (width, id or chat template)."""


class VectorFileError(ProsvError):
    """A saved steering vector is missing, corrupt or of an unknown format."""


class SteeringStateError(ProsvError, RuntimeError):
    """A steering hook saw a forward pass it was not prepared for."""


class TrainingDivergedError(ProsvError, FloatingPointError):
    """A loss or gradient became NaN/inf or exploded during training."""


class JudgeError(ProsvError):
    """A judge cannot run: missing API key, unreachable endpoint, missing embedding model."""


class ResultFileError(ProsvError):
    """A saved result (judged rows, an analysis result) is corrupt, of another kind, or from an
    unknown format version."""
