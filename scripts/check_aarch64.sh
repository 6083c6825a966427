#!/usr/bin/env bash
# The DGX Spark build target (aarch64-unknown-linux-gnu) still compiles: `cargo check` with
# Debian's cross compiler and arm64 FFmpeg headers (multiarch), libtorch's headers from the
# venv. Nothing is linked or run; the Dockerfile does the real aarch64 build on the Spark.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v aarch64-linux-gnu-g++ >/dev/null || [ ! -f /usr/lib/aarch64-linux-gnu/pkgconfig/libavcodec.pc ]; then
    echo "check_aarch64: installing the cross compiler and arm64 FFmpeg headers" >&2
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++-aarch64-linux-gnu \
        libavcodec-dev:arm64 libavformat-dev:arm64 libavutil-dev:arm64 libswscale-dev:arm64 \
        libswresample-dev:arm64 libavfilter-dev:arm64 libavdevice-dev:arm64 >/dev/null
fi
export PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig
export BINDGEN_EXTRA_CLANG_ARGS="--target=aarch64-linux-gnu"
cargo check --quiet --target "$TARGET" --target-dir target/aarch64-check --bin videosdgx
echo "check_aarch64: $TARGET compiles"
