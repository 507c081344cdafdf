"""Interoperation with other libraries (imported one by one; none is loaded here):

torch_weights:  exact conversion to and from PyTorch `state_dict`s.
linen:          Flax linen wrappers of any cell and any layer.
nnx:            a Flax NNX wrapper of any layer.
"""
