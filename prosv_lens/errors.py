"""Every exception prosv-lens raises on bad input, in one hierarchy.

Each message names the problem and the fix in one line. The CLI turns any :class:`ProsvError`
into that line on stderr and exit status 2; anything else that escapes is a bug and keeps its
traceback. Errors that also describe a Python category (a bad value, a missing key or file)
subclass the built-in one too, so ``except ValueError`` keeps working.
"""


class ProsvError(Exception):
    """Base class for every error prosv-lens raises on bad input."""


# -- inputs: values, settings, files -------------------------------------------------------------


class ConfigError(ProsvError, ValueError):
    """A value out of its range: a settings field, a number given on the command line, a
    non-finite factor or direction."""


class DtypeError(ProsvError, ValueError):
    """A dtype is unknown, or cannot be used with this model for this purpose."""


class MemoryBudgetError(ProsvError, ValueError):
    """A memory budget is too small for the smallest unit of work (e.g. one token's logits)."""


class PositionSpecError(ProsvError, ValueError):
    """A position spec is malformed, or does not fit a prompt."""


class PromptError(ProsvError, ValueError):
    """Prompts could not be rendered or tokenised, are blank, or exceed the model's context."""


class ConceptDataError(ProsvError, ValueError):
    """Concept data is malformed, corrupt or cannot be fetched (names the file, line and field)."""


class ConceptFileNotFoundError(ConceptDataError, FileNotFoundError):
    """A concept data file or folder does not exist."""


class UnknownConceptError(ConceptDataError, KeyError):
    """A concept id or name is not in the data source."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckSpecError(ProsvError, ValueError):
    """A checker spec names an unknown checker or passes arguments it does not take."""


# -- models and vectors ---------------------------------------------------------------------------


class ModelLoadError(ProsvError):
    """A model or device could not be found, converted or booted."""


class VectorMismatchError(ProsvError, ValueError):
    """A steering vector does not belong to the model (width, id or chat template)."""


class VectorFileError(ProsvError):
    """A saved steering vector is missing, corrupt, edited after saving, or of an unknown format."""


class SteeringStateError(ProsvError, RuntimeError):
    """A steering hook saw a forward pass it was not prepared for."""


class TrainingDivergedError(ProsvError, FloatingPointError):
    """A loss, gradient, parameter or the edit's size became NaN/inf or exploded in training."""


# -- judges and benchmarks ------------------------------------------------------------------------


class JudgeError(ProsvError):
    """A judge cannot run: missing API key, unreachable endpoint, missing embedding model, or
    too many replies that could not be parsed."""


class BenchmarkUnavailableError(ProsvError):
    """A hub benchmark cannot be loaded (offline, missing package, or not found)."""


# -- results, outputs and runs --------------------------------------------------------------------


class ResultFileError(ProsvError):
    """A saved result (judged rows, an analysis result, a checkpoint) is corrupt, of another
    kind, or from an unknown format version."""


class OutputError(ProsvError):
    """An output cannot be written: the folder is not writable, or a file is already there
    (pass ``--force`` / ``overwrite=True`` or choose another name)."""


class RunLockedError(OutputError):
    """Another process is running in the same run folder."""


class ExperimentError(ProsvError):
    """An experiment run cannot start or continue: bad sizes, an output folder that is not
    writable or holds something else."""


class UnknownSettingError(ExperimentError, KeyError):
    """A setting name that is not in the experiments registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RunMismatchError(ExperimentError):
    """A resumable artifact (checkpoint, run folder, sweep) was produced by other settings, data,
    model or code than the run that tries to resume it."""


class DeviceFitError(ExperimentError):
    """A planned run needs more memory than the device has."""


class SweepError(ProsvError, ValueError):
    """A sweep config is invalid, or ``out_dir`` holds a different sweep."""


class FiguresError(ProsvError):
    """The results folder to draw from is missing or holds no results."""


class ClaimsError(ProsvError, ValueError):
    """Saved results cannot support a comparison (e.g. no instruction answered by both methods)."""


class UnitError(ProsvError):
    """A run's work units are inconsistent: two units with one id (the config repeats a value),
    or a unit that needs one not listed before it."""


class RayUnavailableError(ProsvError):
    """``--workers``/``--address`` was given but Ray is not installed, or the cluster at the
    address cannot be reached."""
