#!/usr/bin/env bash
# Install the llama.cpp runtime of the embedded model (llama-cpp-python) into a Python environment.
#
# Building it from source takes 5-8 minutes on 2 cores, so the built wheel is cached in
# ${THINKBOX_WHEEL_CACHE:-~/.cache/thinkbox/wheels}; a later install on the same machine takes seconds.
#
# usage: scripts/install_llama.sh [PYTHON]     (default: .venv/bin/python if present, else python3)
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
# The build's flavour names its cache folder: a wheel built with other flags is never reused.
# noamx: llama.cpp's CPU backend is compiled for this machine (-march=native) but without the AMX tile
# instructions: a CPU can report AMX while its hypervisor leaves the tile state off, and then the first
# matrix product dies with a general protection fault (ldtilecfg), as on a 2-core Xeon VM of 2026-12-03.
FLAVOUR="noamx"
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CACHE="${THINKBOX_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/thinkbox/wheels}/$FLAVOUR"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${1:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi

say() { printf '[install_llama] %s\n' "$*" >&2; }

MARK="$("$PY" -c 'import sys; print(sys.prefix)')/.thinkbox-llama-flavour"
if "$PY" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.__version__ == '$VERSION' else 1)" 2>/dev/null \
    && [[ "$(cat "$MARK" 2>/dev/null)" == "$FLAVOUR" ]]; then
  say "llama-cpp-python $VERSION ($FLAVOUR) is already installed in $("$PY" -c 'import sys; print(sys.prefix)')"
  exit 0
fi

mkdir -p "$CACHE"
shopt -s nullglob
wheels=("$CACHE"/llama_cpp_python-"$VERSION"-*.whl)
shopt -u nullglob

if (( ${#wheels[@]} == 0 )); then
  say "no cached wheel for llama-cpp-python $VERSION in $CACHE: building it from source"
  say "this compiles llama.cpp and takes 5-8 minutes on 2 cores; it happens once per machine"
  build_dir="$(mktemp -d)"
  trap 'rm -rf "$build_dir"' EXIT
  start=$SECONDS
  # Compiler output goes to a log; a heartbeat shows that the build is alive.
  log="$build_dir/build.log"
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF \"-DCMAKE_C_FLAGS=$NO_AMX\" \"-DCMAKE_CXX_FLAGS=$NO_AMX\"}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$PY" -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python -w "$build_dir" "llama-cpp-python==$VERSION" \
    >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    kill -0 "$pid" 2>/dev/null && say "still building... $((SECONDS - start)) s ($(tail -c 200 "$log" | tr '\n' ' ' | tail -c 80))"
  done
  if ! wait "$pid"; then
    say "build failed; last lines of the log:"
    tail -n 30 "$log" >&2
    say "a C/C++ compiler and cmake are needed (apt-get install build-essential cmake)"
    exit 1
  fi
  cp "$build_dir"/llama_cpp_python-*.whl "$CACHE"/
  say "built in $((SECONDS - start)) s; wheel cached in $CACHE"
  wheels=("$CACHE"/llama_cpp_python-"$VERSION"-*.whl)
else
  say "reusing the cached wheel ${wheels[0]}"
fi

say "installing ${wheels[0]##*/}"
if "$PY" -m pip show -q llama-cpp-python >/dev/null 2>&1; then
  # another build of the same version is installed: replace it, its dependencies stay
  "$PY" -m pip install --disable-pip-version-check --force-reinstall --no-deps "${wheels[0]}"
else
  "$PY" -m pip install --disable-pip-version-check "${wheels[0]}"
fi
echo "$FLAVOUR" > "$MARK"
"$PY" -c "import llama_cpp; print('[install_llama] llama-cpp-python', llama_cpp.__version__, 'ready')" >&2
