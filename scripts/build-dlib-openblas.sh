#!/usr/bin/env bash
# Build dlib from source against OpenBLAS + LAPACK (or CUDA) and install it into facepipe's venv in
# place of the prebuilt dlib-bin wheel, which has no BLAS. Optional: facepipe runs without it.
#
#   scripts/build-dlib-openblas.sh                       # into .venv (about 10 min on 2 cores)
#   VENV=/tmp/other-venv scripts/build-dlib-openblas.sh  # into another venv
#   DLIB_USE_CUDA=1 scripts/build-dlib-openblas.sh       # NVIDIA GPU: CUDA toolkit + cuDNN must be installed
#
# Any DLIB_* variable reaches dlib's CMake (dlib's setup.py passes them on as -DDLIB_...=...).
# The built wheel is kept per variant under $FACEPIPE_BUILD_CACHE (default ~/.cache/facepipe), so running
# the script again after `make setup` (which puts dlib-bin back) takes seconds. To go back by hand:
#   uv pip uninstall --no-config --python .venv/bin/python dlib && make setup
#
# What it changes: dlib's own CNN detector (FACEPIPE_CNN_ENGINE=dlib), the 5-point landmarks and the
# ResNet face encoder. facepipe's default CNN engine runs on onnxruntime and does not use dlib's BLAS.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
DLIB_VERSION=${DLIB_VERSION:-20.0.1}
CACHE=${FACEPIPE_BUILD_CACHE:-$HOME/.cache/facepipe}

if [[ ! -x "$PY" ]]; then
    echo "no Python at $PY: run 'make setup' first (or set VENV)" >&2
    exit 2
fi
if command -v uv >/dev/null 2>&1; then
    UV=(uv)
else
    UV=("${PYTHON:-python3.11}" -m uv)
fi

# System packages: OpenBLAS and LAPACK for dlib's CMake to find, a compiler, cmake.
missing=()
for pkg in libopenblas-dev liblapack-dev cmake g++ make; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    SUDO=()
    [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

variant=openblas
[[ ${DLIB_USE_CUDA:-0} == 1 ]] && variant=cuda
export DLIB_USE_BLAS=${DLIB_USE_BLAS:-1} DLIB_USE_LAPACK=${DLIB_USE_LAPACK:-1}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

# --no-config: the project's pyproject.toml overrides `dlib` away (it installs dlib-bin instead).
# dlib-bin and dlib install the same module files, and an installed dlib may be another variant:
# remove both first.
for dist in dlib-bin dlib; do
    if "${UV[@]}" pip show --no-config --python "$PY" "$dist" >/dev/null 2>&1; then
        "${UV[@]}" pip uninstall --no-config --python "$PY" "$dist"
    fi
done

# The built wheel is kept in $CACHE/dlib-<variant>-wheels (uv rebuilds --no-binary packages on every
# install), so only the first run compiles. REBUILD=1 compiles again (e.g. after changing DLIB_* flags).
WHEELS="$CACHE/dlib-$variant-wheels"
BUILD_CACHE="$CACHE/uv-dlib-$variant"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
newest_wheel() {
    find "$1" -name "dlib-$DLIB_VERSION-$PYTAG-*.whl" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-
}
wheel=""
[[ ${REBUILD:-0} == 1 ]] || wheel=$(newest_wheel "$WHEELS")
if [[ -z $wheel ]]; then
    echo "building dlib $DLIB_VERSION ($variant) from source: 10-15 minutes on 2 cores"
    "${UV[@]}" pip install --no-config --python "$PY" --cache-dir "$BUILD_CACHE" --no-binary dlib "dlib==$DLIB_VERSION"
    built=$(newest_wheel "$BUILD_CACHE")
    if [[ -n $built ]]; then
        mkdir -p "$WHEELS"
        cp "$built" "$WHEELS/"
        rm -rf "$BUILD_CACHE" # about 1 GB of build files; the wheel is all we keep
        echo "kept $WHEELS/$(basename "$built")"
    fi
else
    echo "installing $wheel (built earlier; REBUILD=1 to compile again)"
    "${UV[@]}" pip install --no-config --python "$PY" "$wheel"
fi

"$PY" - "$variant" <<'EOF'
import sys

import dlib

flags = {name: bool(getattr(dlib, name, False)) for name in ("DLIB_USE_BLAS", "DLIB_USE_LAPACK", "DLIB_USE_CUDA")}
print(f"dlib {dlib.__version__}: {flags}")
if not flags["DLIB_USE_BLAS"] or (sys.argv[1] == "cuda" and not flags["DLIB_USE_CUDA"]):
    sys.exit("dlib was built without the requested acceleration: see the CMake output above")
EOF
