"""charrnn: train recurrent language models on any text, sample from them, look inside them.

The public Python API (everything else is the library's own business):

    run = charrnn.load("checkpoints/first")          # a trained run: .sample() .stream() .score()
    run = charrnn.train("input.txt", run_dir="checkpoints/x", steps=300)
    charrnn.Metrics, charrnn.Report, charrnn.Trace   # what score(), training and trace() give
    charrnn.CharrnnError                             # every mistake a user can make
"""

from charrnn.api import Run, load, train
from charrnn.errors import CharrnnError
from charrnn.metrics import Metrics
from charrnn.neurons import Trace
from charrnn.training.reports import Report
from charrnn.version import __version__ as __version__

__all__ = ["CharrnnError", "Metrics", "Report", "Run", "Trace", "load", "train"]
