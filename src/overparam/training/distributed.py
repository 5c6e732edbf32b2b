"""Neuron sharding over torch.distributed: P processes each hold a contiguous block of the m neurons.

Every sum over neurons in docs/mathematics.md#gradient, #ntk splits into per-process partial sums:

    F_l(x_i)          = kappa sum_p sum_{r in block p} a_rl phi_r(x_i)   all-reduce SUM, (n, k)
                        (softmax: all-reduce MAX of the shift, SUM of normaliser and numerator)
    grad_{w_r} L      = sum_{i,l} r_il c_irl x_i                          local, no communication
    Theta             = (X X^T) (.) sum_p C_p C_p^T                        all-reduce SUM, (nk, nk)
    max_r ||w_r(t) - w_r(0)||_2 = max_p (block max)                       all-gather (P, 2)
    ||W(t) - W(0)||_F^2 = sum_p ||W_p(t) - W_p(0)||_F^2                   of (max, squares)

so a GD step moves n k floats (softmax: n k + 2n) per process next to 2 n m d / P multiply-adds.
All of it goes through `coefficients.forward(..., total_width=m, reducer=...)`; this module only
splits the network, runs `overparam.train` on the blocks and gathers W back.

Two ways to run:
- `train(net, X, y, nproc=P)` / `ntk(net, X, nproc=P)` start P local processes (gloo on CPU,
  NCCL on GPUs, MASTER_ADDR=127.0.0.1 and a free port) and return rank 0's result;
- under torchrun (RANK and WORLD_SIZE set) the same calls join the launcher's process group and
  every process returns the result.
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .. import coefficients
from ..models import TwoLayerNet, fits_in_memory, pairs_neurons
from ..kernels.finite import pass_ntk
from .loop import History
from .loop import train as train_one_process
from ..validation import as_inputs, as_targets

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
#: Seconds between the launcher's checks on its processes.
POLL_SECONDS = 0.05


class ProcessGroupReducer:
    """`coefficients.Reducer` over torch.distributed: in-place all-reduce SUM / MAX."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return tensor


def shard_bounds(width: int, parts: int, paired: bool = False) -> list[slice]:
    """Contiguous neuron blocks for `parts` processes, sizes differing by at most one unit.

    The unit is a neuron, or a coupled pair (2r, 2r+1) when `paired`, so that a pair, whose
    two terms cancel exactly at coupled initialisation, never straddles two processes.
    """
    if int(parts) != parts or parts < 1:
        raise ValueError(f"the number of processes must be a positive integer, got {parts!r}")
    unit = 2 if paired else 1
    units = width // unit
    if units < parts:
        what = "coupled neuron pairs" if paired else "neurons"
        raise ValueError(f"cannot split {units} {what} over {parts} processes: "
                         f"give each process at least one (use a width >= {unit * parts})")
    base, extra = divmod(units, parts)
    bounds, start = [], 0
    for part in range(parts):
        size = (base + (part < extra)) * unit
        bounds.append(slice(start, start + size))
        start += size
    return bounds


class ShardedNet(TwoLayerNet):
    """One process's block `neurons` of a TwoLayerNet: W, a hold those rows only.

    `forward_pass` returns the global F (partial sums combined by `reducer`) and its `vjp` is
    this block of grad L, so `overparam.train` runs on it unchanged. `width` is the local
    block size, `total_width` the network's m.
    """

    total_width: int
    neurons: slice
    reducer: ProcessGroupReducer

    @classmethod
    def from_network(cls, net: TwoLayerNet, neurons: slice, reducer: ProcessGroupReducer,
                     device: torch.device | str | None = None) -> "ShardedNet":
        shard = object.__new__(cls)
        shard.__dict__.update(net.__dict__)
        device = net.device if device is None else torch.device(device)
        # Copies, so that updating the block never writes into the caller's full W.
        shard.W = net.W[neurons].to(device=device, copy=True)
        shard.a = net.a[neurons].to(device=device, copy=True)
        shard.total_width, shard.neurons, shard.reducer = net.width, neurons, reducer
        return shard

    def movement(self, W: torch.Tensor, W0: torch.Tensor) -> tuple[list[float], list[float]]:
        """(max_r ||w_r - w_r(0)||_2, ||W - W0||_F) of the whole network, for the blocks W, W0
        (1, m_p, d): one all-gather of each block's (max, sum of squares), the MAX and the SUM in a
        single round trip."""
        norms = (W - W0).norm(dim=-1)
        local = torch.stack([norms.max(), norms.square().sum()])
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(self.reducer.group))]
        dist.all_gather(parts, local, group=self.reducer.group)
        largest, squares = torch.stack(parts).unbind(1)
        return [float(largest.max())], [float(squares.sum().sqrt())]

    @property
    def paired(self) -> bool:
        return pairs_neurons(self.init, self.total_width)  # the full network's pairing

    def forward_pass(self, X: torch.Tensor, keep: bool | None = None, workspace: torch.Tensor | None = None,
                     output: bool = True, weights: torch.Tensor | None = None) -> coefficients.Pass:
        self.check_layers()
        X = as_inputs(X, self.in_dim, self.dtype, self.device)
        if keep is None:
            keep = fits_in_memory(X.shape[0], self.width, self.W)
        return coefficients.forward(
            X, self.W if weights is None else weights, self.a, self.activation, self.kappa, self.chunk(X.shape[0]), keep=keep,
            paired=self.paired, total_width=self.total_width, reducer=self.reducer, workspace=workspace,
            output=output,
        )


# ----------------------------------------------------------------------------- inside a group


def launched() -> bool:
    """True when this process was started by torchrun (or `launch`): RANK and WORLD_SIZE are set."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Rank 0, or a process outside any launch: the one that prints and writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def local_device(device: torch.device | str) -> torch.device:
    """This process's device: cuda:LOCAL_RANK for a CUDA run launched with one GPU per process."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def join_from_env(device: torch.device | str = "cpu") -> None:
    """Join the process group described by RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
    (torchrun's environment): gloo for CPU tensors, NCCL with one GPU per process for CUDA."""
    if dist.is_initialized():
        return
    if not launched():
        raise ValueError("not launched by torchrun: RANK and WORLD_SIZE are not set; use nproc to "
                         "start the processes here")
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(BACKENDS[device.type], init_method="env://")


def shard_network(net: TwoLayerNet, device: torch.device | str | None = None) -> ShardedNet:
    """This process's block of `net` (the same network on every process, e.g. the same seed)."""
    neurons = shard_bounds(net.width, dist.get_world_size(), pairs_neurons(net.init, net.width))
    device = local_device(net.device if device is None else device)
    return ShardedNet.from_network(net, neurons[dist.get_rank()], ProcessGroupReducer(), device)


def gather_weights(shard: ShardedNet) -> torch.Tensor:
    """The full W (m, d) on every process: all-gather of the blocks (padded to one size)."""
    bounds = shard_bounds(shard.total_width, dist.get_world_size(), shard.paired)
    block = max(b.stop - b.start for b in bounds)
    padded = shard.W.new_zeros(block, shard.in_dim)
    padded[: shard.width] = shard.W
    parts = [torch.empty_like(padded) for _ in bounds]
    dist.all_gather(parts, padded)
    return torch.cat([part[: b.stop - b.start] for part, b in zip(parts, bounds)])


def train_in_group(net: TwoLayerNet, X, y, device: torch.device | str | None = None,
                   **options) -> History:
    """Collective: split `net` over the current group, train it (options as `overparam.train`, which
    runs on this process's block unchanged) and write the trained full W into net.W on every process."""
    shard = shard_network(net, device)
    history = train_one_process(shard, X, y, **options)
    net.W = gather_weights(shard).to(net.device)
    return history


def ntk_in_group(net: TwoLayerNet, X, normalized: bool = True, X2=None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Collective: Theta = (X X^T) (.) sum_p C_p C_p^T (docs/mathematics.md#ntk) from each process's block,
    all-reduced; H = Theta / (m kappa^2) when normalized. Same layout as `kernels.finite.ntk`."""
    shard = shard_network(net, device)
    X = as_inputs(X, net.in_dim, shard.dtype, shard.device)
    split = None
    if X2 is not None:
        split = X.shape[0]
        X = torch.cat([X, as_inputs(X2, net.in_dim, shard.dtype, shard.device)])
    kernel = shard.reducer.sum_(pass_ntk(shard.forward_pass(X, keep=False, output=False), normalized=False, split=split))
    if normalized:
        kernel /= shard.total_width * shard.kappa**2
    return kernel


# ----------------------------------------------------------------------------- starting processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_channel = None  # the launched rank 0's line back to the launcher


def _send(message: tuple) -> None:
    _channel.put(pickle.dumps(message))


def _worker(rank: int, world: int, port: int, device: str, threads: int, fn: Callable,
            args: tuple, channel) -> None:
    global _channel
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _channel = channel if rank == 0 else None
    torch.set_num_threads(threads)
    try:
        join_from_env(device)
        result = fn(*args)
        if rank == 0:
            _send(("result", rank, result))
    except BaseException as error:  # reported to the launcher, which stops the other processes
        try:
            message = pickle.dumps(("error", rank, error, traceback.format_exc()))
        except Exception:
            message = pickle.dumps(("error", rank, RuntimeError(repr(error)), traceback.format_exc()))
        channel.put(message)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _report_progress(step: int, residual_norm: float) -> None:
    _send(("progress", 0, step, residual_norm))


def launch(fn: Callable, nproc: int, *args, device: torch.device | str = "cpu",
           progress: Callable[..., None] | None = None, threads: int | None = None) -> Any:
    """Run fn(*args) in `nproc` new local processes joined in one group; return rank 0's value.

    fn and args must be picklable (module-level functions, tensors, networks). device: "cpu"
    (gloo) or "cuda" (NCCL, process p on cuda:p). threads: torch threads per process (default:
    this process's threads / nproc). progress receives what rank 0 passes to `_report_progress`.
    An exception in any process stops all of them and is raised here.
    """
    if int(nproc) != nproc or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    device = torch.device(device)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"nproc = {nproc} CUDA processes need {nproc} GPUs, "
                         f"{torch.cuda.device_count()} visible")
    if threads is None:
        threads = max(1, torch.get_num_threads() // nproc)
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    context = mp.get_context(method)
    if method == "forkserver":
        # The server imports torch once and later launches fork from it in milliseconds. The
        # optimisers and torch.broadcast_shapes import torch._dynamo / sympy on first use
        # (seconds): the server imports them once instead of every process.
        context.set_forkserver_preload([__name__, "torch._dynamo"])
    channel = context.SimpleQueue()
    processes = mp.start_processes(
        _worker, args=(nproc, free_port(), device.type, int(threads), fn, args, channel),
        nprocs=int(nproc), join=False, start_method=method,
    )
    result: list = []
    try:
        done = False
        while not done:
            done = processes.join(timeout=POLL_SECONDS)
            while not channel.empty():
                kind, rank, *payload = pickle.loads(channel.get())
                if kind == "progress":
                    if progress is not None:
                        progress(*payload)
                elif kind == "result":
                    result.append(payload[0])
                else:
                    error, text = payload
                    if hasattr(error, "add_note"):
                        error.add_note(f"raised in process {rank} of {nproc}:\n{text}")
                    raise error
    finally:
        for process in processes.processes:
            if process.is_alive():
                process.terminate()
                process.join()
    if not result:
        raise RuntimeError(f"the {nproc} processes ended without a result")
    return result[0]


# ----------------------------------------------------------------------------- one call


def _train_worker(net: TwoLayerNet, X, y, device: str, options: dict, report: bool):
    options = dict(options)
    if report and dist.get_rank() == 0:
        options["progress"] = _report_progress
    history = train_in_group(net, X, y, device, **options)
    return (history, net.W.cpu()) if dist.get_rank() == 0 else None


def _group_size(nproc: int | None) -> None:
    world = int(os.environ["WORLD_SIZE"])
    if nproc is not None and nproc != world:
        raise ValueError(f"nproc = {nproc} differs from the launcher's WORLD_SIZE = {world}")


def _portable(net: TwoLayerNet) -> TwoLayerNet:
    """A CPU copy to send to the processes (each moves its block to its own device)."""
    copy = net.copy()
    copy.W, copy.a = net.W.cpu(), net.a.cpu()
    return copy


def train(net: TwoLayerNet, X, y, nproc: int | None = None, **options) -> History:
    """`overparam.train` with the m neurons split over `nproc` processes; net.W is updated.

    Options are those of `overparam.train` (lr="auto" runs the power iteration on the sharded
    Theta v products); callbacks must be picklable and see this process's `ShardedNet`. The
    History equals the single-process one up to the summation order of the partial sums.
    Under torchrun, every process calls this with the same arguments and nproc None (or
    WORLD_SIZE).
    """
    if launched():
        _group_size(nproc)
        join_from_env(net.device)
        return train_in_group(net, X, y, **options)
    if nproc is None:
        raise ValueError("give nproc (processes to start), or launch with torchrun")
    shard_bounds(net.width, nproc, pairs_neurons(net.init, net.width))
    X = as_inputs(X, net.in_dim, net.dtype, torch.device("cpu"))
    y = as_targets(y, X.shape[0], net.out_dim, net.dtype, torch.device("cpu"))
    progress = options.pop("progress", None)
    history, W = launch(_train_worker, nproc, _portable(net), X, y, net.device.type, options,
                        progress is not None, device=net.device, progress=progress)
    net.W = W.to(net.device)
    return history


def ntk(net: TwoLayerNet, X, nproc: int | None = None, normalized: bool = True, X2=None) -> torch.Tensor:
    """`kernels.finite.ntk` with the neurons split over `nproc` processes (or a torchrun group): (nk, nk)."""
    if launched():
        _group_size(nproc)
        join_from_env(net.device)
        return ntk_in_group(net, X, normalized, X2)
    if nproc is None:
        raise ValueError("give nproc (processes to start), or launch with torchrun")
    shard_bounds(net.width, nproc, pairs_neurons(net.init, net.width))
    X = as_inputs(X, net.in_dim, net.dtype, torch.device("cpu"))
    X2 = None if X2 is None else as_inputs(X2, net.in_dim, net.dtype, torch.device("cpu"))
    kernel = launch(ntk_in_group, nproc, _portable(net), X, normalized, X2, net.device.type,
                    device=net.device)
    return kernel.to(net.device)
