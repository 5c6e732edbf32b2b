"""`overparam diffusion`: learn a diffusion model's score with two-layer networks, against exact truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..activations import CHOICES
from ..diffusion.experiment import DEFAULT_SAMPLER_STEPS, DiffusionConfig as Config
from ..diffusion.training import TrainingConfig as Training
from .common import Failed, app, fail, output_folder, parse_device, print_json, show_progress


@app.command()
def diffusion(
    data: str = typer.Option(Config.data, help="gmm:k=8,d=2[,radius=3,std=0.3,weights=equal|random|0.2/0.8,seed=0], "
                             "points:k=..,d=.. (std 0), or 2-D sample-only moons, rings, swissroll[:noise=0.1]"),
    activation: str = typer.Option(",".join(Config.activations), help=f"comma-separated, each one of {CHOICES}"),
    width: int = typer.Option(Training.width, help="number of neurons m"),
    n: int = typer.Option(Config.n, help="samples x_0 of p_0 to learn from (a fraction is held out)"),
    sampler: str = typer.Option(Config.sampler, help="sde (reverse SDE, Euler-Maruyama) or ode (probability flow, Heun)"),
    sampler_steps: Optional[int] = typer.Option(None, help="sampler time steps (default {sde} for sde, {ode} for ode)".format(**DEFAULT_SAMPLER_STEPS)),
    spacing: str = typer.Option(Config.spacing, help="sampler time grid: quadratic (uniform in sqrt t), uniform or log"),
    steps: int = typer.Option(Training.steps, help="training step budget (early stopping may end sooner)"),
    optimizer: str = typer.Option(Training.optimizer, help="gd (full batch), sgd or adam"),
    lr: str = typer.Option("auto", help="step size, or 'auto' = 1/lambda_max(Theta(W(0)))"),
    batch_size: Optional[int] = typer.Option(None, help="minibatch size for sgd/adam"),
    noise_draws: int = typer.Option(Training.noise_draws, help="noise draws (t, x_t) per x_0"),
    time_law: str = typer.Option(Training.time_law, help="training times: matched (density ~ alpha_t^2/h_t: the loss is the "
                                 "weighted score error), uniform (docs/mathematics.md#diffusion) or log"),
    val_fraction: float = typer.Option(Training.val_fraction, help="fraction of the x_0 held out for early stopping"),
    eval_every: int = typer.Option(Training.eval_every, help="held-out evaluation every this many steps"),
    patience: int = typer.Option(Training.patience, help="stop after this many evaluations without improvement"),
    twin_budget: Optional[float] = typer.Option(None, help="step budget c * t* of the network's Theta(W(0)) twin "
                                                "(capped at --steps), so that patience ends training, e.g. 2"),
    init: str = typer.Option(Training.init, help="independent or coupled (symmetric, F(W(0)) = 0)"),
    scale: Optional[str] = typer.Option(None, help="output scale kappa: 1, 1/sqrt(m), 1/m or a number"),
    sigma: float = typer.Option(Training.sigma, help="initial weights w_r ~ N(0, sigma^2 I)"),
    t0: float = typer.Option(Config.t0, help="smallest time t0 (training, score error, end of sampling)"),
    t_max: float = typer.Option(Config.T, "--T", help="largest time T (start of sampling from N(0, I))"),
    samples: int = typer.Option(Config.n_samples, help="samples drawn per score for W2/MMD/NLL/weights"),
    score_samples: int = typer.Option(Config.n_score, help="Monte Carlo draws for the weighted score error"),
    twin: str = typer.Option("", help="kernel twins of each network, comma-separated: theta0 (its own Theta(W(0))), "
                             "hstar (m kappa^2 H*); early-stopped kernel regression at the t* of the held-out loss"),
    seed: int = typer.Option(Config.seed, help="seed for samples, noise and initialisation (the truth is fixed by --data)"),
    dtype: str = typer.Option(Training.dtype, help="float64 or float32 (network only; the truth is float64)"),
    device: str = typer.Option(Training.device, help="cpu or cuda"),
    out: Path = typer.Option(Path("out/diffusion"), help="folder for results.json, samples, histories, figures"),
    json_output: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
) -> None:
    """Train score networks (Tweedie denoisers) on p_0, sample with them, and compare with the exact and -x scores."""
    from ..diffusion.datasets import parse_data
    from ..diffusion.experiment import run, write

    parse_device(device)
    output_folder(out)
    parse_data(data)  # a bad --data spec fails here, before any work
    activations = tuple(part.strip() for part in activation.split(",") if part.strip())
    twins = tuple(part.strip() for part in twin.split(",") if part.strip())
    learning_rate: float | str = lr
    if lr != "auto":
        try:
            learning_rate = float(lr)
        except ValueError:
            fail(f"--lr takes a positive number or 'auto', got {lr!r}")
    training = Training(
        width=width, init=init, sigma=sigma, scale=scale, optimizer=optimizer, lr=learning_rate, steps=steps,
        batch_size=batch_size, noise_draws=noise_draws, time_law=time_law, val_fraction=val_fraction,
        eval_every=eval_every, patience=patience, twin_budget=twin_budget, dtype=dtype, device=device)
    config = Config(
        data=data, activations=activations, n=n, training=training, sampler=sampler, sampler_steps=sampler_steps,
        spacing=spacing, t0=t0, T=t_max, n_samples=samples, n_score=score_samples, seed=seed, twins=twins)
    say = (lambda message: typer.echo(message, err=True)) if show_progress(json_output, quiet) else None
    result = run(config, say)
    write(result, out)
    if json_output:
        print_json(result.metrics)
    else:
        _print_table(result.metrics, config, out)
    diverged = [name for name in config.activations if result.metrics[name]["training"]["status"] == "diverged"]
    if diverged:  # a diverged fit is never a success: its row is the best held-out W before it diverged
        raise Failed(f"training diverged for {', '.join(diverged)} (its metrics are for the best network before "
                     f"that); {result.metrics[diverged[0]]['training']['message']}")


def _cell(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _print_table(metrics: dict, config, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"overparam diffusion: {config.data}, {config.sampler} sampler, {config.sampler_steps} steps")
    for column in ("score", "score error", "W2", "MMD^2", "NLL", "weights TV", "between (score err, W2)"):
        table.add_column(column)
    rows = {}
    for name in config.activations:
        rows[name] = metrics[name]
        rows.update({f"{name} twin {kind}": row for kind, row in metrics[name].get("twins", {}).items()})
    rows.update({f"{name} (baseline)": row for name, row in metrics["baselines"].items() if isinstance(row, dict)})
    for name, row in rows.items():
        between = row.get("between")
        position = "" if between is None else f"{_cell(between['score_error'], 3)}, {_cell(between['w2'], 3)}"
        table.add_row(name, _cell(row["score_error"]), _cell(row["w2"]), _cell(row["mmd"]), _cell(row["nll"]),
                      _cell(row["weight_error"]), position)
    console = Console()
    console.print(table)
    for name in config.activations:
        for kind, row in metrics[name].get("twins", {}).items():
            twin = row["twin"]
            limit = " (still falling at the end of the scan)" if twin["at_limit"] else ""
            console.print(f"{name} twin {kind}: t* = {twin['t_star']:.6g}{limit}, stop step {twin['stop_step']}, "
                          f"held-out loss {twin['heldout_loss']:.4g}, lr {twin['lr']:.4g}, {twin['seconds']:.1f} s "
                          f"(the network kept step {metrics[name]['training']['best_step']})")
    console.print("between: 1 = as good as the exact score, 0 = as bad as -x; p0 = fresh draws of p_0 "
                  "(the finite-sample floor of W2 and MMD)")
    console.print(f"results.json, samples.npz, training histories and figures in {out}")
