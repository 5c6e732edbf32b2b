"""Shared test setup.

Tests solve many tiny problems; on a 2-core machine torch's intra-op threads only add
synchronisation cost there (and spin badly when other processes load the cores), so the
suite runs torch single-threaded. Numerics do not depend on the thread count.
"""

import torch

torch.set_num_threads(1)
