"""Which device to run on: the --device option, declared once, and what it names."""

from __future__ import annotations

import torch

from charrnn.errors import ConfigError
from charrnn.settings import option

# The commands that use a model a token at a time or on one text default to the CPU.
DEVICE = option(
    "device", str, "auto", "auto (CUDA when there is a GPU), cpu, cuda or cuda:N.",
    metavar="DEVICE", by={c: "cpu" for c in ("sample", "inspect-neurons", "inspect-gradients")},
)  # fmt: skip


def resolve(name: str) -> torch.device:
    """--device -> a torch.device that exists on this machine; ConfigError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: charrnn runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPUs")
    return device
