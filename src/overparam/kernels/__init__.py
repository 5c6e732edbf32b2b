"""Kernels of the two-layer network (docs/mathematics.md#ntk): the finite-width kernel H(W) = Theta / (m kappa^2)
(`finite`), its infinite-width limit H* (`infinite`), kernels at many widths in one pass (`nested`), their
spectra and eigensolvers (`spectra`, `eigensolvers`), the kernel regime's closed-form GD (`regime`), finite
against infinite width (`comparison`) and their figures (`plots`)."""
