"""Data: long-range dependency tasks (`tasks`) and the Chomsky-hierarchy tasks (`chomsky`),
generated on the fly in JAX; real sequences as in-memory `datasets`: character text
(`text`) and the classification sets that ship with packages (`classification`)."""

from seqjax.data import chomsky, classification, datasets, tasks, text

__all__ = ["chomsky", "classification", "datasets", "tasks", "text"]
