"""A user's own cell family, as a file for `--user_module`: IndRNN (Li et al. 2018),
h' = relu(x @ w + u * h + b) with a diagonal recurrent weight u. Nothing but the
minimal cell protocol: no fast-path capability."""

import dataclasses

import jax
import jax.numpy as jnp

import seqjax


@dataclasses.dataclass(frozen=True)
class IndRNN:
    hidden_size: int
    recurrent_params = ("u",)  # what the gradient-flow experiment scales

    def init(self, key, input_size, dtype=jnp.float32):
        k_w, k_u = jax.random.split(key)
        bound = input_size**-0.5
        w = jax.random.uniform(k_w, (input_size, self.hidden_size), dtype, -bound, bound)
        u = jax.random.uniform(k_u, (self.hidden_size,), dtype, 0.0, 1.0)
        return {"w": w, "u": u, "b": jnp.zeros((self.hidden_size,), dtype)}

    def initial_carry(self, batch_shape=(), dtype=jnp.float32):
        return jnp.zeros((*batch_shape, self.hidden_size), dtype)

    def step(self, params, h, x):
        h = jax.nn.relu(x @ params["w"] + params["u"] * h + params["b"])
        return h, h


seqjax.register_cell("indrnn", IndRNN)
