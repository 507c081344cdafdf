"""Data: long-range dependency tasks (`tasks`) and the Chomsky-hierarchy tasks (`chomsky`),
generated on the fly in JAX."""

from seqjax.data import chomsky, tasks

__all__ = ["chomsky", "tasks"]
