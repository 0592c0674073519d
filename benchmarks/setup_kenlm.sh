#!/usr/bin/env bash
# Build KenLM's `lmplz`, `query` and `build_binary` command-line binaries OUTSIDE the repo,
# for use as benchmark peers. Source comes from the kenlm sdist on PyPI
# (it ships the full KenLM C++ tree, including lm/builder).
#
# Usage: benchmarks/setup_kenlm.sh
#   env LMLAB_CACHE   cache root (default: $HOME/.cache/lmlab)
#   env KENLM_VERSION kenlm sdist version (default: 0.3.0)
#   env JOBS          parallel make jobs (default: 2)
# Prints the bin dir to add to PATH on the last line of stdout.
set -euo pipefail

CACHE_ROOT="${LMLAB_CACHE:-$HOME/.cache/lmlab}"
KENLM_VERSION="${KENLM_VERSION:-0.3.0}"
JOBS="${JOBS:-2}"
KENLM_DIR="$CACHE_ROOT/kenlm"
BIN_DIR="$KENLM_DIR/bin"
DL_DIR="$KENLM_DIR/download"
SRC_DIR="$KENLM_DIR/src"
BUILD_DIR="$KENLM_DIR/build"

have_bins() { [[ -x "$BIN_DIR/lmplz" && -x "$BIN_DIR/query" && -x "$BIN_DIR/build_binary" ]]; }

if have_bins; then
    echo "KenLM binaries already present. Add to PATH:" >&2
    echo "$BIN_DIR"
    exit 0
fi

# --- build dependencies -----------------------------------------------------
SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
echo ">> installing build dependencies via apt" >&2
# A failed index refresh (e.g. no gpgv) is not fatal: the cached package lists often suffice.
$SUDO apt-get update >&2 || echo "warning: apt-get update failed; using cached package lists" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
    cmake libboost-program-options-dev libboost-system-dev \
    libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev \
    liblzma-dev build-essential >&2

# --- fetch the sdist from PyPI ----------------------------------------------
PY="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p "$DL_DIR"
SDIST="$(ls "$DL_DIR"/kenlm-"$KENLM_VERSION".tar.gz 2>/dev/null || true)"
if [[ -z "$SDIST" ]]; then
    echo ">> downloading kenlm==$KENLM_VERSION sdist from PyPI" >&2
    "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation \
        "kenlm==$KENLM_VERSION" -d "$DL_DIR" >&2 \
      || "$PY" -m pip download --no-deps --no-binary :all: \
        "kenlm==$KENLM_VERSION" -d "$DL_DIR" >&2
    SDIST="$(ls "$DL_DIR"/kenlm-"$KENLM_VERSION".tar.gz)"
fi

# --- unpack -----------------------------------------------------------------
rm -rf "$SRC_DIR"
mkdir -p "$SRC_DIR"
tar -xzf "$SDIST" -C "$SRC_DIR" --strip-components=1
if [[ ! -f "$SRC_DIR/CMakeLists.txt" || ! -d "$SRC_DIR/lm/builder" ]]; then
    echo "error: sdist does not contain the KenLM C++ tree (lm/builder)" >&2
    exit 1
fi

# --- build --------------------------------------------------------------------
echo ">> building lmplz, query and build_binary (make -j$JOBS)" >&2
rm -rf "$BUILD_DIR"
cmake -S "$SRC_DIR" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >&2
make -C "$BUILD_DIR" -j"$JOBS" lmplz query build_binary >&2

mkdir -p "$BIN_DIR"
install -m 0755 "$BUILD_DIR/bin/lmplz" "$BUILD_DIR/bin/query" \
    "$BUILD_DIR/bin/build_binary" "$BIN_DIR/"
have_bins
echo "KenLM binaries built. Add to PATH:" >&2
echo "$BIN_DIR"
