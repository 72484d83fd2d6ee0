"""Measurements shared by the benchmark scripts: device sync, peak memory, matmul peak."""

import resource
import time

import torch


def sync(device: str) -> None:
    """Wait for queued GPU work (a no-op on a CPU), so wall-clock times are complete."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_gb(device: str) -> float:
    """Peak GPU memory allocated (GPU), or peak resident memory of this process (CPU), in GB."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def matmul_peak(device: str, dtype: torch.dtype = torch.float32, reps: int = 20) -> float:
    """Dense square-matmul throughput of ``device`` in ``dtype`` (GFLOP/s), measured now."""
    n = 8192 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9
