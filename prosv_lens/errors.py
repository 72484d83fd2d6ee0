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


class ConfigError(ProsvError, ValueError):
    """A settings object (a training config, ...) has a value out of its range."""


class DtypeError(ProsvError, ValueError):
    """A dtype is unknown, or cannot be used with this model for this purpose."""


class ResultFileError(ProsvError):
    """A saved result (judged rows, an analysis result) is corrupt, of another kind, or from an
    unknown format version."""


class MemoryBudgetError(ProsvError, ValueError):
    """A memory budget is too small for the smallest unit of work (e.g. one token's logits)."""


class ExperimentError(ProsvError):
    """An experiment run cannot start or continue: bad sizes, an output folder that is not
    writable or holds something else."""


class UnknownSettingError(ExperimentError, KeyError):
    """A setting name that is not in the experiments registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RunMismatchError(ExperimentError):
    """An output folder holds results of a run with other settings, data or code."""


class DeviceFitError(ExperimentError):
    """A planned run needs more memory than the device has."""
