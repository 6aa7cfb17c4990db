#!/usr/bin/env bash
# The cells' CPU training speed (bench/RESULTS.md, "Cells on a CPU"): each cell at the CPU
# default shape (1x512, embedding 64, batch 16, seq-len 128) on tiny-shakespeare, timed by
# `charrnn bench train` against the plain nn.LSTM loop (nn.GRU, nn.RNN for gru and rnn) in
# the same process, on 2 threads, about 10 s per side. Run it on an idle machine.
#
#     bench/cells_speed.sh 2>&1 | tee /tmp/cells_speed.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SHAKESPEARE=../shared/corpora/tinyshakespeare.txt
for cell in lstm gru rnn peephole nig nfg nog niaf noaf cifg fgr mlstm mingru; do
  echo; echo "\$ charrnn bench train --cell $cell ..."
  $PY -m charrnn bench train --cell "$cell" --layers 1 --hidden 512 --embedding 64 \
      --batch-size 16 --seq-len 128 --device cpu --threads 2 --corpus "$SHAKESPEARE" \
      --steps 120 --untimed-steps 5
done
