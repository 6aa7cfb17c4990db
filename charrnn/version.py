"""charrnn's version: one place, read by the package, the run directories it writes
(config.json's versions) and the build (pyproject.toml)."""

__version__ = "0.1.0"
