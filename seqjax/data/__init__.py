"""Data: long-range dependency tasks (`tasks`) and the Chomsky-hierarchy tasks (`chomsky`),
generated on the fly in JAX; real sequences as in-memory `datasets`: character text
(`text`) and the classification sets that ship with packages (`classification`); and,
imported on use, series to forecast (`series`) and parallel text for encoder-decoders
(`translation`)."""

from seqjax.data import chomsky, classification, datasets, tasks, text

__all__ = ["chomsky", "classification", "datasets", "tasks", "text"]
