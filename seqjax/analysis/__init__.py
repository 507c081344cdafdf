"""Analysis: gradient-flow profiles and recurrent Jacobian spectra (`diagnostics`)."""

from seqjax.analysis import diagnostics

__all__ = ["diagnostics"]
