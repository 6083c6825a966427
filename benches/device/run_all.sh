#!/usr/bin/env bash
# One device call's worth of GPU work, from what benches/device/prepare.sh put in .device-bin/:
# the GPU tests, the attention kernel against cuDNN (the default 128x192 tile, then each tile of
# .device-bin/tiles), the bias + GELU GEMM against cuBLAS + GELU, then the benches named in
# BENCHES (default wan_dit; wan_workflow and wan_14b take minutes each), with the GPU's power
# draw and clock sampled into $OUT/power.csv.
# Every step's output goes to $OUT/run_all.txt under a "== step" line (a device call returns at
# most 8 files); this prints each step's status and last lines.
# Usage (on the device): BENCHES="wan_dit runtime_gpu" bash benches/device/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/.device-bin
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH BENCH_DIR=/tmp VIDEOSDGX_SM90_KERNELS=$bin/libvdgx_sm90.so
log=$out/run_all.txt
nvidia-smi --query-gpu=name,compute_cap,clocks.max.sm,memory.total --format=csv | tee "$log"

step() {
    local name=$1 start=$SECONDS rc output
    shift
    output=$("$@" 2>&1)
    rc=$?
    echo "== $name: exit $rc in $((SECONDS - start)) s"
    printf '\n== %s: exit %s\n%s\n' "$name" "$rc" "$output" >>"$log"
    tail -n 4 <<<"$output"
}

for test in sm90_kernels fused_kernels streaming; do
    step "test_$test" "$bin/$test"
done
step attention_kernel python3 benches/device/attention_sm90.py "$bin/libvdgx_sm90.so"
step gemm_kernel python3 benches/device/gemm_sm90.py "$bin/libvdgx_sm90.so"
for library in "$bin"/tiles/*.so; do
    [ -f "$library" ] || continue
    step "attention_tile_$(basename "$library" .so)" python3 benches/device/attention_sm90.py "$library"
done
# The GPU's power draw and SM clock twice a second while the benches run: an H100 at its power
# limit lowers its clock, and the long steps run there.
nvidia-smi --query-gpu=timestamp,power.draw,power.limit,clocks.sm,temperature.gpu --format=csv \
    -lms 500 >"$out/power.csv" &
sampler=$!
for bench in ${BENCHES:-wan_dit}; do
    step "$bench" "$bin/$bench"
done
kill "$sampler"
