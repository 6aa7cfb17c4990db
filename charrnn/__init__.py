"""charrnn: train recurrent language models on any text, sample from them, look inside them.

The public Python API (everything else is the library's own business):

    run = charrnn.load("checkpoints/first")          # a trained run: .sample() .stream() .score()
    run = charrnn.train("input.txt", run_dir="checkpoints/x", steps=300)
    charrnn.Metrics, charrnn.Report, charrnn.Trace   # what score(), training and trace() give
    charrnn.CharrnnError                             # every mistake a user can make
"""

__version__ = "0.1.0"

from charrnn.api import Run, load, train  # noqa: E402
from charrnn.errors import CharrnnError  # noqa: E402
from charrnn.metrics import Metrics  # noqa: E402
from charrnn.neurons import Trace  # noqa: E402
from charrnn.trainer import Report  # noqa: E402

__all__ = ["CharrnnError", "Metrics", "Report", "Run", "Trace", "load", "train"]
