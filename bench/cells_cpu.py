"""Time forward + backward of one window through each cell against nn.LSTM (oneDNN).

    flock /tmp/charrnn-cpu.lock python bench/cells_cpu.py                  # every cell
    flock /tmp/charrnn-cpu.lock python bench/cells_cpu.py --cells peephole mingru

Why: charrnn's own cells (charrnn/cells/) run a Python loop over time with a hand-written
backward; this says what that costs against PyTorch's fused LSTM at the CPU default shape
(1 layer, H 512, E 64 input, batch 16, T 128). Training FLOPs are 3x the forward's
(cell.flops_per_token()); tokens/s and FLOP/s are of the best of --repeats windows, each
cell timed in turn with nn.LSTM so that both see the same load. Run it on an idle machine,
under the CPU lock: with another process on the cores the figures measure the contention.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from charrnn.cells import CELLS, make_cell

TRAIN_FLOPS_FACTOR = 3  # forward + backward (about twice the forward's matmuls)


def window_seconds(cell: nn.Module, x: torch.Tensor, state: tuple) -> float:
    """One forward + backward of the window, as training runs it."""
    t0 = time.perf_counter()
    ys, _ = cell(x, state)
    ys.sum().backward()
    return time.perf_counter() - t0


def step_loop_seconds(cell: nn.Module, x: torch.Tensor, state: tuple) -> float:
    """The same window as T calls of cell.step under plain autograd: what a window function
    (or PyTorch's fused kernel) saves over the equations written as ordinary ops."""
    t0 = time.perf_counter()
    hs = []
    for t in range(x.shape[1]):
        state, _ = cell.step(x[:, t], state)
        hs.append(state[0])
    torch.stack(hs, 1).sum().backward()
    return time.perf_counter() - t0


def lstm_window_seconds(lstm: nn.LSTM, x: torch.Tensor, state: tuple) -> float:
    t0 = time.perf_counter()
    ys, _ = lstm(x, state)
    ys.sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step-loop", action="store_true", help="also time T calls of step()")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, E, H = args.batch_size, args.seq_len, args.embedding, args.hidden
    x = torch.randn(B, T, E, requires_grad=True)  # like an embedding's output
    lstm = nn.LSTM(E, H, batch_first=True)
    lstm_state = (torch.zeros(1, B, H), torch.zeros(1, B, H))
    lstm_flops = 2 * 4 * H * (E + H)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B {B} T {T} E {E} H {H}")
    print(f"{'cell':9} {'params':>10} {'MFLOP/tok':>9} {'ms':>7} {'tokens/s':>9} "
          f"{'ratio':>6} {'GFLOP/s':>8} {'FLOP/s ratio':>12}")  # fmt: skip
    for name in args.cells:
        cell = make_cell(name, E, H)
        state = tuple(torch.zeros(B, H) for _ in cell.state_names)
        for _ in range(2):  # warm-up: oneDNN's kernels, the allocator
            window_seconds(cell, x, state), lstm_window_seconds(lstm, x, lstm_state)
        best, best_lstm = float("inf"), float("inf")
        for _ in range(args.repeats):
            best_lstm = min(best_lstm, lstm_window_seconds(lstm, x, lstm_state))
            best = min(best, window_seconds(cell, x, state))
        tokens, tokens_lstm = B * T / best, B * T / best_lstm
        flops, ratio = cell.flops_per_token(), tokens / tokens_lstm
        flops_per_s = TRAIN_FLOPS_FACTOR * flops * tokens
        mfu_ratio = flops_per_s / (TRAIN_FLOPS_FACTOR * lstm_flops * tokens_lstm)
        params = sum(p.numel() for p in cell.parameters())
        loop = ""
        if args.step_loop:
            seconds = min(step_loop_seconds(cell, x, state) for _ in range(args.repeats // 4 + 1))
            loop = f"  step() loop {seconds * 1e3:.1f} ms"
        print(f"{name:9} {params:>10,} {flops / 1e6:>9.2f} {best * 1e3:>7.1f} {tokens:>9,.0f} "
              f"{ratio:>5.2f}x {flops_per_s / 1e9:>8.1f} {mfu_ratio:>11.2f}x{loop}")  # fmt: skip
    print(f"{'nn.LSTM':9} {'':>10} {lstm_flops / 1e6:>9.2f} {best_lstm * 1e3:>7.1f} "
          f"{tokens_lstm:>9,.0f} (last)")  # fmt: skip


if __name__ == "__main__":
    main()
