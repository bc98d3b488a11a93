"""The installed version of fusion, read from the package metadata, so that the number
is written in one place only (``pyproject.toml``)."""

from importlib import metadata

try:
    __version__ = metadata.version("fusion")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
