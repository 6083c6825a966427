"""The Hopper bias + GELU GEMM (`gelu_tanh(x·wᵀ + b)` in one kernel) against libtorch's
`linear` then `gelu(approximate="tanh")` (cuBLAS + a separate kernel) at the DiTs' MLP shapes:
ms, TFLOP/s, and each one's distance to the same function in float64 on the same inputs.

Run on the GPU machine: python3 benches/device/gemm_sm90.py PATH/libvdgx_sm90.so...
(build it here with scripts/build_sm90_kernels.sh and carry it).
"""

import ctypes
import os
import sys

import torch
import torch.nn.functional as F

from timing import seconds


class Args(ctypes.Structure):
    """`GemmArgs` of src/runtime/gemm_sm90.cu."""

    _fields_ = [("x", ctypes.c_void_p), ("w", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("out", ctypes.c_void_p), ("m", ctypes.c_int64), ("n", ctypes.c_int64),
                ("k", ctypes.c_int64), ("stream", ctypes.c_void_p)]


def loaded(path):
    lib = ctypes.CDLL(path)
    assert lib.vdgx_sm90_abi() == 3
    run = lib.vdgx_sm90_linear_gelu_tanh
    run.argtypes = [ctypes.c_int, ctypes.POINTER(Args)]

    def fused(x, w, b):
        out = torch.empty(x.shape[0], w.shape[0], device=x.device, dtype=x.dtype)
        args = Args(x.data_ptr(), w.data_ptr(), b.data_ptr(), out.data_ptr(), x.shape[0],
                    w.shape[0], x.shape[1], torch.cuda.current_stream().cuda_stream)
        rc = run(0 if x.dtype == torch.bfloat16 else 1, ctypes.byref(args))
        assert rc == 0, f"cudaError {rc}"
        return out

    return fused


def chain(x, w, b):
    return F.gelu(F.linear(x, w, b), approximate="tanh")


# (name, rows, dim, hidden): Wan 1.3B at 33 and 81 frames (CFG batch 2), Wan 14B at 81, FLUX
# at 1024², and an odd size that fills no tile evenly.
SHAPES = [("wan 1.3B 33f", 28080, 1536, 8960), ("wan 1.3B 81f", 65520, 1536, 8960),
          ("wan 14B 81f", 65520, 5120, 13824), ("flux 1024²", 4608, 3072, 12288),
          ("odd", 1000, 200, 328)]

kernels = [(os.path.basename(p), loaded(p)) for p in sys.argv[1:]]
print(torch.cuda.get_device_name())
print("| kernel | dtype | shape | ms | TFLOP/s | libtorch ms | TFLOP/s | "
      "max / mean error kernel | max / mean error libtorch |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for dtype in (torch.bfloat16, torch.float16):
    for name, rows, dim, hidden in SHAPES:
        x = torch.randn(rows, dim, device="cuda", dtype=dtype)
        w = torch.randn(hidden, dim, device="cuda", dtype=dtype) * dim ** -0.5
        b = torch.randn(hidden, device="cuda", dtype=dtype) * 0.1
        checked = slice(0, min(rows, 4096))  # float64 on a slice of the rows keeps it quick
        exact = F.gelu(F.linear(x[checked].double(), w.double(), b.double()), approximate="tanh")
        def error(out):
            diff = (out[checked].double() - exact).abs()
            return f"{diff.max().item():.2e} / {diff.mean().item():.2e}"
        theirs = seconds(lambda: chain(x, w, b), reps=20)
        flops = 2 * rows * dim * hidden
        for label, fused in kernels:
            mine = seconds(lambda: fused(x, w, b), reps=20)
            print(f"| {label} | {str(dtype)[6:]} | {name} | {mine * 1e3:.3f} | "
                  f"{flops / mine / 1e12:.0f} | {theirs * 1e3:.3f} | {flops / theirs / 1e12:.0f} | "
                  f"{error(fused(x, w, b))} | {error(chain(x, w, b))} |")
