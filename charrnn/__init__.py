"""charrnn: train recurrent language models on any text, sample from them, look inside them."""

__version__ = "0.1.0"
