"""Study presets as plain data. quick: 2 CPU cores in under 10 minutes; paper: one GPU; full: a cluster."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..activations import PAPERS, resolve
SECTIONS = ("concentration", "training", "laziness", "threshold", "perturbation", "initialisation", "diffusion",
            "generalisation", "real_data")


@dataclass(frozen=True)
class StudyConfig:
    preset: str
    activations: tuple[str, ...] = PAPERS
    d: int = 8
    seed: int = 0
    sigma: float = 1.0
    # (a) NTK concentration at initialisation
    kernel_n: int = 64
    kernel_widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
    kernel_seeds: int = 8
    # (b, c) training curves and laziness
    train_n: int = 24
    train_widths: tuple[int, ...] = (128, 512, 2048)
    train_seeds: int = 4
    train_steps: int = 3000
    train_init: str = "coupled"
    tol: float = 1e-3
    # (d) empirical thresholds m*(n)
    threshold_ns: tuple[int, ...] = (8, 16, 32, 64)
    threshold_widths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    threshold_seeds: int = 8
    threshold_budget: str = "theory:3"
    threshold_max_steps: int = 4000
    delta: float = 0.25
    # the kernel threshold by one nested pass per seed (SPEC §8), and lambda(n) = lambda_min(H*) up to large n
    threshold_kernel_widths: tuple[int, ...] = tuple(2**p for p in range(6, 23))
    lambda_ns: tuple[int, ...] = tuple(2**p for p in range(3, 12))
    # perturbation of the kernel (SPEC §10) at the training section's n, widths and init: radii R of every
    # neuron's move, projected-ascent steps of the worst direction
    perturbation_radii: tuple[float, ...] = tuple(10 ** (k / 4) for k in range(-12, 1))
    perturbation_ascent_steps: int = 10
    # (e) coupled vs independent initialisation
    init_n: int = 24
    init_width: int = 1024
    init_seeds: int = 3
    # (f) diffusion: n draws of p_0 to learn from, network width, GD step budget (early stopping may
    # end sooner), sampler and its steps, samples per score (W2, MMD, NLL), score-error Monte Carlo draws
    diffusion_data: str = "gmm:k=4,d=2"
    diffusion_n: int = 1024
    diffusion_width: int = 512
    diffusion_steps: int = 1500
    diffusion_sampler: str = "sde"
    diffusion_sampler_steps: int = 100
    diffusion_samples: int = 1000
    diffusion_score_samples: int = 4096
    # learning curves: every width at n = diffusion_n, every n at m = diffusion_width (one seed per point)
    diffusion_widths: tuple[int, ...] = (64, 256, 512)
    diffusion_ns: tuple[int, ...] = (256, 512, 1024)
    # (g) generalisation: a teacher on the sphere with label noise; widths at n = generalisation_n, then
    # generalisation_ns at the largest width; each network trained to tol within generalisation_steps
    generalisation_n: int = 64
    generalisation_ns: tuple[int, ...] = (16, 32, 64)
    generalisation_widths: tuple[int, ...] = (64, 256, 1024, 2048)
    generalisation_seeds: int = 2
    generalisation_steps: int = 20000
    generalisation_noise: float = 0.1
    generalisation_test: int = 1000
    # real data: scikit-learn's digits (d = 64), true against random labels (ADHLW19). Training at one width
    # and n; the complexity term and lambda_min(H*) at real_ns; m*_opt at real_threshold_ns (with section (d)'s
    # threshold_budget and threshold_max_steps)
    real_classes: tuple[int, ...] = (3, 5)
    real_ns: tuple[int, ...] = (32, 64, 128, 256)
    real_label_draws: int = 5
    real_train_n: int = 64
    real_width: int = 256
    real_seeds: int = 4
    real_steps: int = 2000
    real_threshold_ns: tuple[int, ...] = (32, 64)
    real_threshold_widths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
    real_threshold_seeds: int = 4
    sections: tuple[str, ...] = SECTIONS
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_activations(self, activations) -> "StudyConfig":
        """The same study, every section run for these activations (names or 'module:attribute')."""
        activations = tuple(activations)
        if not activations:
            raise ValueError("give at least one activation")
        for activation in activations:
            resolve(activation)
        if len(set(activations)) != len(activations):
            raise ValueError(f"activations repeat: {', '.join(activations)}")
        return replace(self, activations=activations)

    def only(self, sections) -> "StudyConfig":
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown section(s) {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
        return replace(self, sections=tuple(s for s in SECTIONS if s in sections))


PRESETS = {
    "quick": StudyConfig(preset="quick"),
    "paper": StudyConfig(
        preset="paper", d=16, kernel_n=256, kernel_widths=tuple(2**p for p in range(6, 18)), kernel_seeds=16,
        train_n=128, train_widths=(512, 2048, 8192, 32768), train_seeds=8, train_steps=20000,
        threshold_ns=(16, 32, 64, 128, 256), threshold_widths=tuple(2**p for p in range(1, 16)),
        threshold_seeds=16, threshold_max_steps=50000, delta=0.1,
        threshold_kernel_widths=tuple(2**p for p in range(6, 25)), lambda_ns=(*(2**p for p in range(4, 15)), 20000),
        init_n=128, init_width=8192, init_seeds=8,
        diffusion_data="gmm:k=8,d=2", diffusion_n=8192, diffusion_width=8192, diffusion_steps=5000,
        diffusion_sampler_steps=200, diffusion_samples=5000, diffusion_score_samples=16384,
        diffusion_widths=(512, 1024, 2048, 4096, 8192), diffusion_ns=(1024, 2048, 4096, 8192),
        generalisation_n=256, generalisation_ns=(32, 64, 128, 256, 512), generalisation_widths=tuple(2**p for p in range(6, 16)),
        generalisation_seeds=4, generalisation_steps=200000,
        real_ns=(32, 64, 128, 256, 365), real_label_draws=20, real_train_n=256, real_width=4096, real_seeds=8,
        real_steps=20000, real_threshold_ns=(32, 64, 128, 256), real_threshold_widths=tuple(2**p for p in range(1, 12)),
        real_threshold_seeds=8,
    ),
    "full": StudyConfig(
        preset="full", d=32, kernel_n=1024, kernel_widths=tuple(2**p for p in range(6, 21)), kernel_seeds=32,
        train_n=512, train_widths=(2048, 8192, 32768, 131072), train_seeds=16, train_steps=50000,
        threshold_ns=(16, 32, 64, 128, 256, 512, 1024), threshold_widths=tuple(2**p for p in range(1, 19)),
        threshold_seeds=32, threshold_max_steps=200000, delta=0.05,
        threshold_kernel_widths=tuple(2**p for p in range(6, 25)), lambda_ns=(*(2**p for p in range(4, 15)), 20000),
        init_n=512, init_width=32768, init_seeds=16,
        diffusion_data="gmm:k=8,d=2", diffusion_n=32768, diffusion_width=65536, diffusion_steps=20000,
        diffusion_sampler_steps=500, diffusion_samples=5000, diffusion_score_samples=65536,
        diffusion_widths=tuple(2**p for p in range(10, 17)), diffusion_ns=tuple(2**p for p in range(11, 16)),
        generalisation_n=1024, generalisation_ns=(64, 128, 256, 512, 1024, 2048), generalisation_seeds=8,
        generalisation_widths=tuple(2**p for p in range(6, 19)), generalisation_steps=1000000, generalisation_test=5000,
        real_classes=tuple(range(10)), real_ns=(64, 128, 256, 512, 1024, 1797), real_label_draws=50, real_train_n=1024,
        real_width=16384, real_seeds=16, real_steps=100000, real_threshold_ns=(64, 128, 256, 512, 1024),
        real_threshold_widths=tuple(2**p for p in range(1, 16)), real_threshold_seeds=16,
    ),
}


def preset(name: str) -> StudyConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use quick, paper or full")
    return PRESETS[name]
