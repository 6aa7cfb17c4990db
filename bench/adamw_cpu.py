"""Time one AdamW step three ways (fused, for-each, for-loop) on charrnn models.

    python bench/adamw_cpu.py                      # the CPU defaults (1x512) and a 2x256 LSTM
    python bench/adamw_cpu.py --models 2x1024 --device cuda

Why: Trainer uses the fused AdamW on every device, because it alone skips a bad step on
the device (found_inf) with no host sync; this says what that costs or saves. Gradients
are random; the time of optimizer.step() alone is reported, best of --repeats runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from charrnn.model import ModelConfig, RNNLanguageModel

KINDS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}


def time_step(model, device, options: dict, steps: int, repeats: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), **options)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    for _ in range(3):
        optimizer.step()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["1x512", "2x256"], help="LxH")
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads")
    for shape in args.models:
        layers, hidden = map(int, shape.split("x"))
        config = ModelConfig(args.vocab_size, layers=layers, hidden=hidden,
                             embedding=args.embedding)  # fmt: skip
        model = RNNLanguageModel(config).to(device)
        params = sum(p.numel() for p in model.parameters())
        times = {k: time_step(model, device, o, args.steps, args.repeats) for k, o in KINDS.items()}
        cells = "  ".join(f"{k} {t * 1e3:.3f} ms" for k, t in times.items())
        print(f"lstm {shape} ({params:,} params): {cells}")


if __name__ == "__main__":
    main()
