"""Transitional: sections not yet moved to `framework.StudySection` run through this adapter.

`FlatConfig` shows a `StudyConfig` under the old flat field names (e.g. `train_n`, `diffusion_width`);
`LegacySection` wraps a module with `units(flat)` and `run(flat, ctx)`. Delete this module once every
section defines a `StudySection`.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIXES = (("kernel_", "concentration"), ("train_", "training"), ("real_", "real_data"),
            ("threshold_", "threshold"), ("perturbation_", "perturbation"), ("init_", "initialisation"),
            ("diffusion_", "diffusion"), ("generalisation_", "generalisation"))


class FlatConfig:
    """Old flat names over a StudyConfig: `train_n` is `study.section("training").n`, and so on."""

    def __init__(self, study) -> None:
        self._study = study

    def __getattr__(self, name: str):
        study = self._study
        if name == "train_init":
            return study.init
        if name == "lambda_ns":
            return study.section("threshold").lambda_ns
        for prefix, key in PREFIXES:
            if name.startswith(prefix):
                return getattr(study.section(key), name[len(prefix):])
        return getattr(study, name)


@dataclass
class LegacySection:
    module: object

    @property
    def KEY(self) -> str:
        return self.module.KEY

    @property
    def TITLE(self) -> str:
        return self.module.TITLE

    @property
    def Config(self):
        return self.module.Config
