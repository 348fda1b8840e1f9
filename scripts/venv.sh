# Sourced by the scripts: creates .venv if missing and installs ptjax (+ the extras named in
# $PTJAX_EXTRAS, e.g. "[test]"). Not positional: a sourced file sees its caller's "$@".
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${PTJAX_EXTRAS:-}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
