"""Concept training data: a name, instructions and responses (and neutral responses).

Sources, all returning :class:`ConceptData`:

* **AxBench** (Concept10/Concept500/ConceptFD and the Hugging Face releases). Three layouts are
  read, chosen by :func:`resolve_axbench`:

  - the *release* layout: ``metadata.jsonl``, ``train_data.parquet`` and
    ``latent_eval_data.parquet`` in one folder (e.g. the shared Concept10 copy);
  - the *repo* layout of the AxBench GitHub repository
    (``axbench/{concept10,concept500}/prod_{2b_l10,2b_l20,9b_l20,9b_l31}_v1/``):
    ``generate/metadata.jsonl``, ``generate/train_data.parquet`` and
    ``inference/latent_eval_data.parquet``; also spelled ``"axbench-repo:<clone>:concept500/2b_l10"``.
    A folder with only the metadata (the Concept500 parquet files are large and often absent)
    lists its concepts; loading a concept's rows names the missing file and how to fetch it;
  - the *hub* layout of ``pyvene/axbench-concept10`` (``{2b,9b}/{l10,l20,l31}/``):
    ``train/data.parquet`` and ``test/data.parquet``, no metadata (the concepts are read from
    the parquet's ``concept_id``, ``output_concept`` and ``concept_genre`` columns). A source
    ``"hf:pyvene/axbench-concept10/2b/l10"`` is downloaded once into the Hugging Face cache.

  AxBench trains concept c on its 72 positives (instruction, concept response) plus the 72
  shared negatives of c's genre (other instructions answered by the target model):
  :func:`load_axbench_training_set`. For runs over many concepts, :func:`axbench_concept_ids`
  lists a configuration's ids (all, the first N, or a checked list) and :func:`concept_blocks`
  cuts them into work units of K.
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
    axbench_concept_ids,
    axbench_concepts,
    concept_blocks,
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
    "axbench_concept_ids",
    "axbench_concepts",
    "builtin_concepts",
    "builtin_instruction_categories",
    "builtin_instructions",
    "concept_blocks",
    "concept_slug",
    "load_axbench_concept",
    "load_axbench_latent_eval",
    "load_axbench_training_set",
    "load_builtin_concept",
    "load_jsonl_concept",
    "resolve_axbench",
]
