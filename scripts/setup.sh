#!/usr/bin/env bash
# Idempotent set-up for mcnn-explorer on a fresh Debian machine with Python 3.11.
#
#   1. apt packages (Open MPI, cmake, ...) -- only those that are missing;
#   2. a project venv (.venv) with the pinned requirements;
#   3. Horovod 0.28.1 built from the PyPI sdist with the XLA ops dropped (TF 2.21 no longer ships
#      their headers).  The wheel is cached in $MCNN_CACHE (default ~/.cache/mcnn-explorer), so a
#      second set-up -- even from a fresh clone -- takes seconds.
#
# Every step is skipped when its result is already there.  Usage: scripts/setup.sh [--with-test-deps]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MCNN_VENV:-$ROOT/.venv}"
CACHE="${MCNN_CACHE:-$HOME/.cache/mcnn-explorer}"
PYTHON="${MCNN_PYTHON:-python3.11}"
HOROVOD_VERSION="0.28.1"
WITH_TEST_DEPS=0
for arg in "$@"; do
  case "$arg" in
    --with-test-deps) WITH_TEST_DEPS=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --with-test-deps)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- apt
APT_PACKAGES=(openmpi-bin libopenmpi-dev cmake g++ make iproute2 procps)
# the test suite's browser checks drive headless Chromium
# and the shared-study tests start a private PostgreSQL server; the SLURM tests a private
# cluster; the host-fault tests an sshd in each network-namespace host
if ((WITH_TEST_DEPS)); then APT_PACKAGES+=(chromium fonts-dejavu-core postgresql slurm-wlm munge openssh-server openssh-client); fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  log "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- venv + pinned requirements
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  PYTHON=python3
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/setup.cfg" "$@" | sha256sum | cut -c1-16; }
REQ_STAMP="$(stamp_of)"
if [[ "$(cat "$VENV/.mcnn-req-stamp" 2>/dev/null)" != "$REQ_STAMP" ]]; then
  log "installing pinned requirements into $VENV"
  "${PIP[@]}" install -r "$ROOT/requirements.txt"
  "${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT" 2>/dev/null \
    || "${PIP[@]}" install --no-deps -e "$ROOT"
  echo "$REQ_STAMP" >"$VENV/.mcnn-req-stamp"
fi
if [[ "$WITH_TEST_DEPS" == 1 ]]; then
  DEV_STAMP="$(stamp_of "$ROOT/requirements-dev.txt")"
  if [[ "$(cat "$VENV/.mcnn-dev-stamp" 2>/dev/null)" != "$DEV_STAMP" ]]; then
    log "installing test requirements"
    "${PIP[@]}" install -r "$ROOT/requirements-dev.txt"
    echo "$DEV_STAMP" >"$VENV/.mcnn-dev-stamp"
  fi
fi

# ---------------------------------------------------------------- Horovod (cached wheel)
if ! "$PY" -c "import horovod.tensorflow as h; assert h.mpi_built()" >/dev/null 2>&1; then
  TF_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"
  WHEEL_DIR="$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$(uname -m)"
  mkdir -p "$WHEEL_DIR"
  wheel="$(ls "$WHEEL_DIR"/horovod-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$wheel" ]]; then
    log "building Horovod $HOROVOD_VERSION from sdist (about 3-4 min on 2 cores; cached afterwards)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download --no-deps --no-binary :all: -d "$work" "horovod==$HOROVOD_VERSION"
    tar -xzf "$work"/horovod-"$HOROVOD_VERSION".tar.gz -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"
    # TF 2.21 no longer ships the XLA headers xla_mpi_ops.cc needs; the XLA ops only matter on GPU.
    sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
    grep -q xla_mpi_ops "$src/horovod/tensorflow/CMakeLists.txt" && {
      log "could not drop xla_mpi_ops.cc from horovod/tensorflow/CMakeLists.txt"; exit 1; }
    "${PIP[@]}" install "setuptools<81" wheel packaging
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 MAKEFLAGS="-j$(nproc)" \
      "${PIP[@]}" wheel --no-build-isolation --no-deps --no-cache-dir -w "$WHEEL_DIR.tmp" "$src"
    mv "$WHEEL_DIR.tmp"/horovod-*.whl "$WHEEL_DIR"/
    rmdir "$WHEEL_DIR.tmp" 2>/dev/null || true
    wheel="$(ls "$WHEEL_DIR"/horovod-*.whl | head -n1)"
  fi
  log "installing cached Horovod wheel $wheel"
  "${PIP[@]}" install --no-deps "$wheel"
  "${PIP[@]}" install cloudpickle psutil pyyaml packaging
  # TensorFlow's native INFO lines are noise here: show the output only if the check fails
  check="$("$PY" -c "import horovod.tensorflow as h; assert h.mpi_built(), 'Horovod built without MPI'" 2>&1)" \
    || { printf '%s\n' "$check" >&2; exit 1; }
fi
log "ready: $VENV"
