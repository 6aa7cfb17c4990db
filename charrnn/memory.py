"""How much memory a request needs, and how much there is: what cannot fit is refused in
one line before anything is allocated, instead of a 100-line allocator traceback, or a
process that grows until the kernel kills it.

The needs are estimates from the shapes, at float32 (4 bytes a number), of what is
certain to be allocated (the parameters counted exactly, from the model each cell lays
out, built on the meta device); they leave out
PyTorch's own workspace and copies, so what is refused could not have fit, and what is let
through may still be tight:

    training   16 bytes a parameter (the weights, their gradient, AdamW's two moments),
               and the activations one window keeps for the backward pass
               B * T * (L * H * (G + 3) + E + 3 * V) numbers, G the gate blocks of the
               cell's weights (its own `gate_weights`)
    sampling   per sample: the prime's logits and layer outputs P * (V + 2 * L * H), the
               state and its next value 2 * S * L * H, six [V] rows of logits, and 16 bytes
               a token for the text made
    scoring    the logits and layer outputs of one batch of windows, up to EVAL_STREAMS
               x T tokens (all of a shorter text): (V + 2 * L * H) numbers a token

What there is: on CUDA torch.cuda.mem_get_info; on a CPU MemAvailable of /proc/meminfo,
or less when the process's cgroup (a container) is limited to less. Nothing here allocates.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from charrnn.cells import CELLS
from charrnn.errors import ConfigError
from charrnn.metrics import EVAL_STREAMS
from charrnn.model import ModelConfig, RNNLanguageModel, count_parameters

FLOAT = 4  # bytes of a float32
BYTES_PER_TOKEN_MADE = 16  # a token id in a Python list, and its share of the decoded text


def parameters(config: ModelConfig) -> int:
    """The model's parameter count, exact for every cell: the model built on the meta
    device, where a tensor has a shape and no memory (the tied matrix counted once)."""
    with torch.device("meta"):
        return count_parameters(RNNLanguageModel(config))


def training_bytes(config: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Bytes on the device to train `config` on windows of batch_size x seq_len."""
    B, T, L, H = batch_size, seq_len, config.layers, config.hidden
    G = CELLS[config.cell].gate_weights
    per_token = L * H * (G + 3) + config.embedding + 3 * config.vocab_size
    return FLOAT * (4 * parameters(config) + B * T * per_token)


def sampling_bytes(config: ModelConfig, samples: int, prime: int, length: int) -> tuple[int, int]:
    """(bytes on the device, bytes on the host) to make `samples` samples of `length`
    tokens together after a prime of `prime` tokens, the weights already loaded."""
    L, H, V = config.layers, config.hidden, config.vocab_size
    states = len(config.state_names)
    per_sample = max(prime, 1) * (V + 2 * L * H) + 2 * states * L * H + 6 * V
    return FLOAT * samples * per_sample, BYTES_PER_TOKEN_MADE * samples * length


def available(device: torch.device) -> tuple[int, str]:
    """(bytes free, where they are, in words) on `device`'s memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"{device} has"
    return host_available(), "this machine has"


def host_available() -> int:
    """MemAvailable, or what the cgroup's limit leaves if that is less."""
    free = _meminfo_available()
    for limit, usage, stat, inactive in _CGROUPS:
        try:
            cap = int(Path(limit).read_text())
            used = int(Path(usage).read_text()) - _stat(Path(stat), inactive)
        except (OSError, ValueError):  # no such cgroup, or "max": no limit
            continue
        if cap < 1 << 60:
            free = min(free, max(cap - used, 0))
    return free


# (limit, usage, stat file, its key for reclaimable page cache): cgroup v2, then v1
_CGROUPS = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
     "/sys/fs/cgroup/memory.stat", "inactive_file"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"),
)  # fmt: skip


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # no /proc (not Linux): the free pages, as the OS counts them
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _stat(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def size(n: float) -> str:
    """Bytes in words: 1.5 GiB, 596 PiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check(request: str, device: torch.device, needed: int, host: int = 0, fix: str = "") -> None:
    """ConfigError unless `needed` bytes fit on `device` and `host` more in this machine's
    memory (on a CPU the two add up). `request` names what asks (the flags), `fix` what
    to do."""
    device = torch.device(device)
    wants = [(needed + host if device.type == "cpu" else needed, device)]
    if device.type != "cpu" and host:
        wants.append((host, torch.device("cpu")))
    for want, where in wants:
        free, has = available(where)
        if want > free:
            raise ConfigError(
                f"{request} needs about {size(want)} of memory; {has} {size(free)} "
                f"available{'; ' + fix if fix else ''}"
            )


def check_training(config: ModelConfig, batch_size: int, seq_len: int, device) -> None:
    """ConfigError unless a model of `config` can train on `device` (training_bytes)."""
    request = (
        f"training {parameters(config):,} parameters ({config.cell}, --layers {config.layers} "
        f"--hidden {config.hidden} --embedding {config.embedding}) on --batch-size "
        f"{batch_size} x --seq-len {seq_len}"
    )
    fix = "give a smaller --hidden, --layers, --batch-size or --seq-len"
    check(request, device, training_bytes(config, batch_size, seq_len), fix=fix)


def check_sampling(config: ModelConfig, samples: int, prime: int, length: int, device) -> None:
    """ConfigError unless `samples` samples of `length` tokens fit (sampling_bytes)."""
    on_device, on_host = sampling_bytes(config, samples, prime, length)
    many = f"--num-samples {samples:,} of " if samples > 1 else ""
    request = f"{many}--length {length:,}" + (
        f" after a prime of {prime:,} tokens" if prime > 1 else ""
    )
    fix = "make fewer samples at a time, or shorter ones"
    check(request, device, on_device, on_host, fix)


def check_scoring(config: ModelConfig, tokens: int, seq_len: int, device) -> None:
    """ConfigError unless scoring `tokens` tokens in windows of `seq_len` fits on `device`
    (metrics.evaluate reads up to EVAL_STREAMS streams of them at once)."""
    rows = min(tokens, EVAL_STREAMS * seq_len)
    needed = FLOAT * rows * (config.vocab_size + 2 * config.layers * config.hidden)
    check(f"scoring in windows of --seq-len {seq_len:,}", device, needed,
          fix="give a smaller --seq-len")  # fmt: skip
