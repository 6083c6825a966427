#!/usr/bin/env bash
# `pip install` into .venv without a wheel cache, unpacking in the checkout's .pip-tmp.
# pip unpacks every download (about 4 GB with torch's CUDA libraries) into TMPDIR before it
# installs, and a pip that is killed or runs out of disk leaves that behind: inside the
# checkout, removed on every exit, failed runs cannot fill the machine's /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TMP="$PWD/.pip-tmp"
rm -rf "$PIP_TMP"
mkdir -p "$PIP_TMP"
trap 'rm -rf "$PIP_TMP"' EXIT
TMPDIR="$PIP_TMP" .venv/bin/pip "$@" -q --disable-pip-version-check --no-cache-dir
