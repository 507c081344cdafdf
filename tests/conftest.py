"""Shared test set-up: strict dtype promotion, so that no silent upcast hides a dtype bug."""

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)
