"""`python -m charrnn`: the same as the `charrnn` command (and what torchrun launches)."""

from charrnn.cli import app

if __name__ == "__main__":
    app(prog_name="charrnn")
