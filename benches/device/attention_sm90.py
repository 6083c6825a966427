"""The Hopper attention library against torch's SDPA (cuDNN on an H100) at Wan's self-attention
shapes: max error of each against float32 attention, ms and TFLOP/s.

Run on the GPU machine: python3 benches/device/attention_sm90.py PATH/libvdgx_sm90.so
(build it here with scripts/build_sm90_kernels.sh and carry it).
"""

import ctypes
import sys

import torch
import torch.nn.functional as F

from timing import seconds


class Args(ctypes.Structure):
    """`AttentionArgs` of src/runtime/attention_sm90.cu."""

    _fields_ = [("q", ctypes.c_void_p), ("k", ctypes.c_void_p), ("v", ctypes.c_void_p),
                ("o", ctypes.c_void_p), ("batch", ctypes.c_int64), ("q_len", ctypes.c_int64),
                ("kv_len", ctypes.c_int64), ("heads", ctypes.c_int64),
                ("q_strides", ctypes.c_int64 * 3), ("k_strides", ctypes.c_int64 * 3),
                ("v_strides", ctypes.c_int64 * 3), ("o_strides", ctypes.c_int64 * 3),
                ("key_bias", ctypes.c_void_p), ("scale", ctypes.c_float),
                ("stream", ctypes.c_void_p)]


lib = ctypes.CDLL(sys.argv[1])
assert lib.vdgx_sm90_abi() == 3
run = lib.vdgx_sm90_attention
run.argtypes = [ctypes.c_int, ctypes.POINTER(Args)]


def kernel(q, k, v):
    """q, k, v: [batch, tokens, heads, 128] views."""
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    strides = lambda t: (ctypes.c_int64 * 3)(*t.stride()[:3])
    args = Args(q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), q.shape[0], q.shape[1],
                k.shape[1], q.shape[2], strides(q), strides(k), strides(v), strides(o), None,
                q.shape[3] ** -0.5, torch.cuda.current_stream().cuda_stream)
    assert run(0 if q.dtype == torch.bfloat16 else 1, ctypes.byref(args)) == 0
    return o


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


print(torch.cuda.get_device_name(), "cuDNN", torch.backends.cudnn.version())
print("| dtype | tokens | kernel ms | TFLOP/s | SDPA ms | TFLOP/s | max error kernel / SDPA |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for dtype in (torch.bfloat16, torch.float16):
    for tokens in (1000, 14040, 32760):  # Wan 480p at 33 and 81 frames
        batch, heads, dim = 2, 12, 128
        q, k, v = torch.randn(batch, tokens, 3, heads, dim, device="cuda", dtype=dtype).unbind(2)
        errors = "–"
        if tokens < 20000:
            exact = sdpa(q.float(), k.float(), v.float())
            errors = " / ".join(f"{(f(q, k, v).float() - exact).abs().max().item():.2e}"
                                for f in (kernel, sdpa))
        flops = 4 * batch * heads * tokens * tokens * dim
        mine, theirs = seconds(lambda: kernel(q, k, v)), seconds(lambda: sdpa(q, k, v))
        print(f"| {str(dtype)[6:]} | {tokens} | {mine * 1e3:.2f} | {flops / mine / 1e12:.0f} | "
              f"{theirs * 1e3:.2f} | {flops / theirs / 1e12:.0f} | {errors} |")
