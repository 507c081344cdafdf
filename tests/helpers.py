"""Independent references shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np


def check_grads_by_finite_differences(loss, args, *, eps=1e-6, rtol=1e-6, directions=3):
    """Checks `jax.grad(loss)` against central differences along random directions.

    Run inside `jax.enable_x64(True)` with float64 `args` (a tuple of pytrees).
    """
    grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
    rng = np.random.default_rng(0)
    for _ in range(directions):
        v = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), args)
        plus = jax.tree.map(lambda a, d: a + eps * d, args, v)
        minus = jax.tree.map(lambda a, d: a - eps * d, args, v)
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v), strict=True)
        )
        np.testing.assert_allclose(analytic, fd, rtol=rtol)
