"""The installed version of the package."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lora-theory")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
