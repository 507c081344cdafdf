"""Shared test set-up: strict dtype promotion, so that no silent upcast hides a dtype bug."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

# A user's module, imported by path (experiments.user_modules) where a test needs it;
# collecting its doctests would import and register it a second time.
collect_ignore = ["user_cells.py"]


@pytest.fixture
def key():
    return jax.random.key(0)
