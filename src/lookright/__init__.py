"""lookright: experiment pipeline for vision-language models that are right for the right reasons."""

__version__ = "0.1.0"
