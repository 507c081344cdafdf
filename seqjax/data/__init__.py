"""Data: long-range dependency tasks generated on the fly in JAX (`tasks`)."""

from seqjax.data import tasks

__all__ = ["tasks"]
