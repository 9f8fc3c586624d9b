"""lora-theory: rank-1 LoRA fine-tuning on single-index models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lora-theory")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
