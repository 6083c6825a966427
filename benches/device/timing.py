"""Wall time of a GPU call, shared by the kernel benches of this folder."""

import time

import torch


def seconds(fn, reps=10):
    """Mean seconds per call of `fn` over `reps` calls after one warm-up."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps
