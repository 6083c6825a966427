#!/usr/bin/env bash
# Builds the Hopper kernel library (src/runtime/attention_sm90.cu: flash attention;
# src/runtime/gemm_sm90.cu: the MLP's GEMM with bias + GELU) into .venv/videosdgx/libvdgx_sm90.so,
# where runtime/sm90.rs finds it.
#
# Everything comes from PyPI, pinned: nvcc, NVVM and the CRT headers of CUDA 13.0 (the runtime
# torch 2.11 ships) go into .venv beside torch's CUDA libraries, and the FlashInfer kernel headers
# (with the CUTLASS the GEMM uses) are unpacked from the flashinfer-python wheel. No GPU is needed
# to build; the library only runs on compute capability 9.0 (sm_90a wgmma), and every other GPU
# keeps cuDNN attention and cuBLAS.
# Re-running is cheap: nothing is fetched or compiled twice.
# Usage: build_sm90_kernels.sh [LIBRARY [NVCC_FLAG...]]: another output path and flags build a
# variant (benches/device/prepare.sh builds other attention tiles with -DVDGX_CTA_Q=… and the like).
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_VERSION=13.0.88
FLASHINFER_VERSION=0.7.2.post1
SOURCES=(src/runtime/attention_sm90.cu src/runtime/gemm_sm90.cu)
INCLUDES=(src/runtime/sm90_entry.cuh)
OUT_DIR=.venv/videosdgx
LIBRARY=${1:-$OUT_DIR/libvdgx_sm90.so}
EXTRA_FLAGS=("${@:2}")
HEADERS=$OUT_DIR/flashinfer-$FLASHINFER_VERSION

PYTHON=.venv/bin/python
CUDA_ROOT=$($PYTHON -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')

if [ ! -x "$CUDA_ROOT/bin/nvcc" ] || [ ! -x "$CUDA_ROOT/nvvm/bin/cicc" ] || [ ! -f "$CUDA_ROOT/include/crt/host_config.h" ]; then
    echo "setup: installing nvcc $CUDA_VERSION into .venv" >&2
    bash scripts/pip_install.sh install --no-deps \
        "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-nvvm==$CUDA_VERSION" "nvidia-cuda-crt==$CUDA_VERSION"
fi

if [ ! -d "$HEADERS" ]; then
    echo "setup: unpacking the FlashInfer $FLASHINFER_VERSION kernel headers" >&2
    WHEELS=$(mktemp -d)
    trap 'rm -rf "$WHEELS"' EXIT
    bash scripts/pip_install.sh download --no-deps -d "$WHEELS" \
        "flashinfer-python==$FLASHINFER_VERSION"
    # Only the headers the kernel needs: FlashInfer's, CUTLASS/CuTe's and the CCCL it pins.
    $PYTHON - "$WHEELS"/flashinfer_python-*.whl "$HEADERS.partial" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
keep = ("flashinfer/data/include/", "flashinfer/data/cutlass/include/",
        "flashinfer/data/cutlass/tools/util/include/", "flashinfer/data/cccl/")
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.startswith(keep)])
EOF
    mv "$HEADERS.partial/flashinfer/data" "$HEADERS"
    rm -rf "$HEADERS.partial"
fi

stale() {
    [ ! -f "$LIBRARY" ] || [ "$0" -nt "$LIBRARY" ] && return 0
    for source in "${SOURCES[@]}" "${INCLUDES[@]}"; do [ "$source" -nt "$LIBRARY" ] && return 0; done
    return 1
}

if stale; then
    echo "setup: compiling the Hopper kernels (about two minutes)" >&2
    mkdir -p "$(dirname "$LIBRARY")"
    # The vendored CCCL goes first (-I) so it wins over the toolkit's older copy, as in
    # FlashInfer's own JIT builds; cudart is linked statically so the library needs no rpath.
    # Warning 20012 is CUTLASS's sm_100 scheduler headers, which the sm_90 GEMM includes.
    # Only the entries are visible, and the library binds its own symbols: libtorch_cuda exports
    # CUTLASS functions of the same names (cutlass::ClusterLauncher::launch), and a process that
    # links libtorch would otherwise run those, on libtorch's CUDA runtime, with our kernels.
    "$CUDA_ROOT/bin/nvcc" -O3 -std=c++17 -shared -Xcompiler -fPIC,-fvisibility=hidden \
        -Xlinker -Bsymbolic -DNDEBUG \
        -gencode arch=compute_90a,code=sm_90a \
        --expt-relaxed-constexpr --expt-extended-lambda -static-global-template-stub=false \
        -I"$HEADERS/cccl/cub" -I"$HEADERS/cccl/libcudacxx/include" -I"$HEADERS/cccl/thrust" \
        -isystem "$HEADERS/include" -isystem "$HEADERS/cutlass/include" \
        -isystem "$HEADERS/cutlass/tools/util/include" \
        -L"$CUDA_ROOT/lib" -cudart static ${EXTRA_FLAGS[@]+"${EXTRA_FLAGS[@]}"} \
        -diag-suppress 20012 "${SOURCES[@]}" -o "$LIBRARY.partial"
    mv "$LIBRARY.partial" "$LIBRARY"
fi
