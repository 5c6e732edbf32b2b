"""Activations a researcher might bring, for tests/test_activations.py.

Module-level functions, so that the records pickle: sharded training spawns processes and sends
them the network. `activation_examples:SWISH` names one from the CLI or a sweep spec.
"""

import torch

from overparam import Activation


def swish(z):
    """phi(z) = z s(z) (s the logistic sigmoid); its derivative is left to autograd."""
    return z * torch.sigmoid(z)


def total(z):
    """Not elementwise: one sum per row."""
    return z.sum(-1, keepdim=True)


SWISH = Activation.elementwise("swish", swish)
SIN = Activation.elementwise("sin", torch.sin, torch.cos)
NOT_ELEMENTWISE = Activation.elementwise("total", total)
LOG = Activation.elementwise("log", torch.log)  # NaN at the negative <w_r, x_i>
NOT_AN_ACTIVATION = 3
