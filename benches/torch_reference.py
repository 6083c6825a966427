"""PyTorch's own figures on the same GPU for benches/runtime_gpu.rs: bf16 F.linear and FP8
torch._scaled_mm (kernel alone, and with ComfyUI's per-call activation cast) at Wan 14B's 480p
shape, and SDPA at Wan's 480p attention shapes. Run: python3 benches/torch_reference.py"""
import torch
import torch.nn.functional as F


def time_ms(f, reps=20):
    for _ in range(2):
        f()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[reps // 2]


def main():
    dev = "cuda"
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    m, k, n = 32760, 5120, 5120
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
    scale = (w.abs().max().float() / 448)
    w8 = (w / scale.bfloat16()).to(torch.float8_e4m3fn)
    one = torch.ones((), device=dev)
    x8 = x.clamp(-448, 448).to(torch.float8_e4m3fn)
    tf = lambda ms: 2 * m * k * n / (ms * 1e-3) / 1e12
    print("| torch path | ms | TFLOP/s |")
    print("| --- | --- | --- |")
    for name, f in [
        ("bf16 F.linear", lambda: F.linear(x, w)),
        ("fp8 _scaled_mm + activation cast", lambda: torch._scaled_mm(
            x.clamp(-448, 448).to(torch.float8_e4m3fn), w8.t(), scale_a=one, scale_b=scale, out_dtype=torch.bfloat16)),
        ("fp8 _scaled_mm kernel alone", lambda: torch._scaled_mm(
            x8, w8.t(), scale_a=one, scale_b=scale, out_dtype=torch.bfloat16)),
    ]:
        ms = time_ms(f)
        print(f"| {name} | {ms:.3} | {tf(ms):.1f} |")
    print("| heads | torch SDPA ms | TFLOP/s |")
    print("| --- | --- | --- |")
    for heads in (12, 40):
        q = torch.randn(1, heads, 32760, 128, device=dev, dtype=torch.bfloat16)
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, q, q), reps=5)
        print(f"| {heads} | {ms:.2f} | {4 * heads * 32760**2 * 128 / (ms * 1e-3) / 1e12:.0f} |")


if __name__ == "__main__":
    main()
