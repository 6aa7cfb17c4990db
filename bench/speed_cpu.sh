#!/usr/bin/env bash
# The CPU speed figures of bench/RESULTS.md ("Speed on a CPU"): charrnn against a plain
# PyTorch loop, timed in the same process by `charrnn bench`. Run it on an idle machine:
# with another process on the cores the figures measure the contention, not the code.
#
#     bench/speed_cpu.sh 2>&1 | tee /tmp/speed_cpu.txt
#
# PYTHON picks the interpreter (default: python, with charrnn importable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SHAKESPEARE=../shared/corpora/tinyshakespeare.txt
run() { echo; echo "\$ $*"; "$@"; }

run $PY -c 'import os, torch; print("torch", torch.__version__, "|", os.cpu_count(), "CPUs |", torch.get_num_threads(), "torch threads by default")'
uptime

# Longer than the commands' defaults: on these shared cores 20 training steps or 500
# tokens varied by 10-20% from run to run (the ratio of one 2x256 training run read
# 0.82x, the next 1.05x), so the figures here time about 10 seconds per side.
#
# Sampling, one stream: the issue's figure (chars/s of a 2x256 LSTM, and its ratio).
# Default threads: 1 for up to 4 streams (sample.cpu_threads); the second line checks 2.
for _ in 1 2 3; do
  run $PY -m charrnn bench sample --layers 2 --hidden 256 --batch-size 1 --device cpu --steps 5000
done
run $PY -m charrnn bench sample --layers 2 --hidden 256 --batch-size 1 --device cpu --steps 5000 \
    --threads 2
# Sampling, batched (default threads: torch's, 2 here) and the largest size.
run $PY -m charrnn bench sample --layers 2 --hidden 256 --batch-size 64 --device cpu --steps 2000
run $PY -m charrnn bench sample --layers 2 --hidden 256 --batch-size 64 --device cpu --steps 2000 \
    --threads 1
run $PY -m charrnn bench sample --layers 3 --hidden 1024 --batch-size 1 --device cpu --steps 200

# Training: the CPU defaults (1x512, batch 16 x 128) on tiny-shakespeare, then 2x256.
run $PY -m charrnn bench train --layers 1 --hidden 512 --batch-size 16 --seq-len 128 \
    --device cpu --corpus "$SHAKESPEARE" --steps 80
run $PY -m charrnn bench train --layers 2 --hidden 256 --batch-size 32 --seq-len 128 \
    --device cpu --steps 60
run $PY -m charrnn bench train --layers 2 --hidden 256 --batch-size 1 --seq-len 128 \
    --device cpu --steps 400

# One AdamW step: fused (what Trainer uses) against for-each and for-loop.
run $PY bench/adamw_cpu.py
