#!/usr/bin/env bash
# Installs what VideosDGX needs, once: a local venv with PyPI torch (libtorch for tch) and
# the test clients, and Debian's FFmpeg development packages. Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==${TORCH_VERSION}" "requests" "websocket-client" "pytest")

if ! command -v pkg-config >/dev/null || ! pkg-config --exists libavcodec libavformat libswscale 2>/dev/null; then
    echo "setup: installing FFmpeg development packages" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pkg-config clang libclang-dev \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
        libavfilter-dev libavdevice-dev ffmpeg >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, requests, websocket, pytest; assert torch.__version__.startswith('${TORCH_VERSION}')" 2>/dev/null; then
    echo "setup: installing ${PY_PACKAGES[*]} into .venv" >&2
    .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
