"""Concept training data: a name, instructions and responses (and neutral responses).

Sources, all returning :class:`ConceptData`:

* **AxBench** (Concept10/Concept500/ConceptFD and the Hugging Face releases). Two layouts are
  read, chosen by :func:`resolve_axbench`:

  - the *release* layout of the AxBench repository: ``metadata.jsonl``, ``train_data.parquet``
    and ``latent_eval_data.parquet`` in one folder;
  - the *hub* layout of ``pyvene/axbench-concept10`` (``{2b,9b}/{l10,l20,l31}/``):
    ``train/data.parquet`` and ``test/data.parquet``, no metadata (the concepts are read from
    the parquet's ``concept_id``, ``output_concept`` and ``concept_genre`` columns). A source
    ``"hf:pyvene/axbench-concept10/2b/l10"`` is downloaded once into the Hugging Face cache.

  AxBench trains concept c on its 72 positives (instruction, concept response) plus the 72
  shared negatives of c's genre (other instructions answered by the target model):
  :func:`load_axbench_training_set`.
* **A JSONL file** of ``{"prompt", "response"[, "negative"]}`` rows (:func:`load_jsonl_concept`).
* **Built-in data** shipped with the package: an instruction set written for the project with a
  fixed train/eval split (:func:`builtin_instructions`) and a few concepts generated from it by
  SmolLM2-135M-Instruct with ``scripts/build_builtin_concepts.py``
  (:func:`builtin_concepts`, :func:`load_builtin_concept`).
"""

from prosv_lens.concepts.axbench import (
    AxBenchFolder,
    AxBenchTrainingSet,
    LabeledResponses,
    axbench_concepts,
    load_axbench_concept,
    load_axbench_latent_eval,
    load_axbench_training_set,
    resolve_axbench,
)
from prosv_lens.concepts.builtin import (
    INSTRUCTION_SPLITS,
    builtin_concepts,
    builtin_instruction_categories,
    builtin_instructions,
    load_builtin_concept,
)
from prosv_lens.concepts.data import (
    ConceptData,
    ConceptDataError,
    ConceptFileNotFoundError,
    UnknownConceptError,
    concept_slug,
    load_jsonl_concept,
)

__all__ = [
    "INSTRUCTION_SPLITS",
    "AxBenchFolder",
    "AxBenchTrainingSet",
    "ConceptData",
    "ConceptDataError",
    "ConceptFileNotFoundError",
    "LabeledResponses",
    "UnknownConceptError",
    "axbench_concepts",
    "builtin_concepts",
    "builtin_instruction_categories",
    "builtin_instructions",
    "concept_slug",
    "load_axbench_concept",
    "load_axbench_latent_eval",
    "load_axbench_training_set",
    "load_builtin_concept",
    "load_jsonl_concept",
    "resolve_axbench",
]
