"""Timing on a device: how long a loop of steps takes and its peak memory, the FLOP/s of a
large matmul timed on the same device (the peak that MFU divides by), the device's name
and the versions of what ran. charrnn.bench times charrnn and its reference with these;
they know nothing of models."""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn.cells import matmul


@dataclass
class Measure:
    tokens_per_sec: float
    seconds_per_step: float
    peak_memory: int  # bytes: CUDA max_memory_allocated, or the process's peak RSS on a CPU
    loss: float | None = None  # mean training loss over the timed steps (a sanity check)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """FLOP/s of the fastest of a few timed n x n matmuls, and how it was measured. On a
    CPU both torch.mm (MKL) and oneDNN's linear, which nn.LSTM and charrnn's own cells use,
    are timed and the faster is the peak: on this project's AMD CPU MKL takes a slower
    path, and a peak of torch.mm alone put nn.LSTM above 100% MFU."""
    n, repeats = (8192, 10) if device.type == "cuda" else (1024, 3)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    kernels = {"torch.mm": lambda: torch.mm(a, b, out=c)}
    if device.type == "cpu" and dtype == torch.float32 and matmul.onednn_available():
        kernels["oneDNN linear"] = lambda: matmul.linear(a, b)
    times = {name: _fastest(run, device, repeats) for name, run in kernels.items()}
    name = min(times, key=times.get)
    how = f"{name} {n}x{n} {str(dtype).removeprefix('torch.')}"
    if len(times) > 1:
        how += f", the faster of {' and '.join(times)}"
    if device.type == "cuda" and dtype == torch.float32:
        how += f", TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}"
    return 2 * n**3 / times[name], how


def _fastest(run, device: torch.device, repeats: int) -> float:
    """Seconds of one call of `run`, the fastest of 5 timings of `repeats` calls."""
    run()
    best = float("inf")
    with torch.inference_mode():
        for _ in range(5):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                run()
            sync(device)
            best = min(best, (time.perf_counter() - t0) / repeats)
    return best


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak, or on a CPU the process's peak
    resident set (getrusage), reset before the block where Linux allows it."""

    CLEAR_REFS = Path("/proc/self/clear_refs")  # writing "5" resets the peak RSS (Linux)

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def how(device: torch.device) -> str:
        if device.type == "cuda":
            return "torch.cuda.max_memory_allocated, reset before each measure"
        if os.access(PeakMemory.CLEAR_REFS, os.W_OK):
            return "peak RSS of the process (getrusage), reset before each measure"
        return "peak RSS of the process since it started (getrusage): ours and reference mixed"

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif os.access(self.CLEAR_REFS, os.W_OK):
            self.CLEAR_REFS.write_text("5")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB
        return False


def time_steps(step, warmup: int, steps: int, device: torch.device, finish=lambda: None):
    """Run `step` warmup + steps times -> (seconds of the timed steps, peak memory, what
    `finish` returned). `finish` runs inside the timing: it reads back what the host
    would read, so a step that only queues work on the device is not undercounted."""
    for _ in range(warmup):
        step()
    finish()
    sync(device)
    with PeakMemory(device) as memory:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out = finish()
        sync(device)
        seconds = time.perf_counter() - t0
    return seconds, memory, out


def measure(tokens: int, seconds: float, steps: int, memory, loss=None) -> Measure:
    return Measure(tokens / seconds, seconds / steps, memory.peak, loss)


def peak_around(device: torch.device, dtype: torch.dtype, run) -> tuple[float, str, object]:
    """(matmul peak, how, what run() returned): the faster of a peak timed before run()
    and one timed after it. One timing alone can catch the machine briefly busy and read
    low, which flatters the MFU (a CPU run once read 116% so)."""
    before, how = matmul_peak(device, dtype)
    out = run()
    after, _ = matmul_peak(device, dtype)
    return max(before, after), f"{how}, the faster of before and after", out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn}
