"""run_sweep end to end: stored rows against independent single runs, resume, failures, the pool."""

import shutil
from unittest import mock

import numpy as np
import pytest

from overparam import TwoLayerNet, train
from overparam.data import builtin
from overparam.kernels.infinite import infinite_ntk
from overparam.kernels.finite import ntk
from overparam.sweep import Store, SweepSpec, run_sweep, split_groups
from overparam.sweep.spec import theory_steps

SMALL = {"activations": ["exp", "relu"], "widths": [16, 32], "n": [6], "d": 4, "seeds": 3, "tol": 1e-2,
         "steps": "theory:2", "max_steps": 400}


def key_rows(path):
    with Store(path) as store:
        return {(row["config_hash"], row["seed"]): row for row in store.runs()}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "runs.db"
    counts = run_sweep(SMALL, path, workers=1)
    assert counts.done == 12 and counts.failed == 0 and counts.skipped == 0
    return path


def test_rows_equal_independent_single_runs(small_store):
    data = builtin("sphere", 6, 4, 1, seed=0)
    with Store(small_store) as store:
        rows = store.runs()
        assert len(rows) == 12 and {row["status"] for row in rows} <= {"converged", "max_steps"}
        for row in rows:
            net = TwoLayerNet(4, row["width"], 1, row["activation"], init="coupled", seed=row["seed"])
            limit = infinite_ntk(row["activation"], data.X).numpy()
            lam = float(np.linalg.eigvalsh(limit)[0])
            assert row["lambda_min"] == pytest.approx(lam, rel=1e-12)
            # spectral norm by SVD, independent of the store's eigvalsh
            distance = np.linalg.norm(ntk(net, data.X).numpy() - limit, 2)
            assert row["kernel_distance"] == pytest.approx(distance, rel=1e-10)
            single = train(net.copy(), data.X, data.y, lr="auto", steps=row["budget"], tol=1e-2)
            assert row["budget"] == theory_steps(2.0, single.residual_norm[0], 1e-2, single.lr, row["width"],
                                                 net.kappa, lam, 400)
            assert (row["status"], row["steps"]) == (single.status, single.steps)
            assert row["lr"] == pytest.approx(single.lr, rel=1e-10)
            assert row["lr_eff"] == pytest.approx(single.lr * row["width"] * net.kappa**2, rel=1e-12)
            assert row["final_residual"] == pytest.approx(single.residual_norm[-1], rel=1e-10, abs=1e-12)
            assert row["max_movement"] == pytest.approx(single.max_movement[-1], rel=1e-10, abs=1e-12)
            curve = store.curve(row)
            np.testing.assert_allclose(curve["residual_norm"], single.residual_norm, rtol=1e-10)
            np.testing.assert_array_equal(curve["step"], single.step)
            assert row["device"] == "cpu" and row["overparam_version"] and row["torch_version"]
            assert row["batch_size"] == 3 and row["error"] is None


def test_data_per_seed_and_several_outputs(tmp_path):
    spec = {"activations": ["softmax"], "widths": [12], "n": [5], "d": 3, "k": 2, "seeds": [1, 4],
            "data": "teacher", "data_seed": "seed", "steps": 40, "tol": 1e-3}
    run_sweep(spec, tmp_path / "runs.db")
    with Store(tmp_path / "runs.db") as store:
        rows = store.runs()
    assert [row["seed"] for row in rows] == [1, 4]
    for row in rows:
        data = builtin("teacher", 5, 3, 2, seed=row["seed"])  # each seed its own data set
        net = TwoLayerNet(3, 12, 2, "softmax", init="coupled", seed=row["seed"])
        limit = infinite_ntk("softmax", data.X).numpy()
        distance = np.linalg.norm(ntk(net, data.X).numpy() - np.kron(np.eye(2), limit), 2)
        assert row["kernel_distance"] == pytest.approx(distance, rel=1e-10)
        assert row["lambda_min"] == pytest.approx(np.linalg.eigvalsh(limit)[0], rel=1e-12)
        single = train(net, data.X, data.y, steps=40, tol=1e-3)
        assert row["final_residual"] == pytest.approx(single.residual_norm[-1], rel=1e-10)


def test_rerun_skips_finished_and_redoes_unfinished(small_store, tmp_path):
    path = tmp_path / "runs.db"
    shutil.copy(small_store, path)  # closed stores have no WAL left to copy
    shutil.copytree(small_store.with_suffix(".curves"), path.with_suffix(".curves"))
    with Store(path) as store:
        store.db.execute("UPDATE runs SET status = 'running' WHERE seed = 0 AND width = 16")
        store.db.execute("DELETE FROM runs WHERE seed = 2 AND width = 32 AND activation = 'relu'")
    counts = run_sweep(SMALL, path, workers=1)
    assert (counts.skipped, counts.done, counts.failed) == (12 - 3, 3, 0)
    after = key_rows(path)
    assert len(after) == 12 and all(row["status"] != "running" for row in after.values())
    before = key_rows(small_store)
    for key, row in after.items():
        assert row["steps"] == before[key]["steps"]
        assert row["final_residual"] == pytest.approx(before[key]["final_residual"], rel=1e-10)


def test_failed_runs_are_recorded_and_do_not_stop_the_sweep(tmp_path):
    # exp with sigma = 3000 overflows float64 at initialisation; relu trains normally
    spec = {"activations": ["exp", "relu"], "widths": [8], "n": [4], "d": 3, "seeds": 2, "sigma": 3000.0,
            "steps": 5}
    path = tmp_path / "runs.db"
    counts = run_sweep(spec, path, workers=1)
    assert (counts.done, counts.failed) == (2, 2)
    with Store(path) as store:
        failed = store.runs(status="failed")
        assert {row["activation"] for row in failed} == {"exp"} and len(failed) == 2
        assert all("OverflowError" in row["error"] and "overflows float64" in row["error"] for row in failed)
        assert {row["status"] for row in store.runs(activation="relu")} == {"max_steps"}
    assert run_sweep(spec, path, workers=1).skipped == 4
    again = run_sweep(spec, path, workers=1, retry_failed=True)
    assert (again.skipped, again.failed) == (2, 2)


def test_process_pool_writes_the_same_rows(small_store, tmp_path):
    path = tmp_path / "pool.db"
    counts = run_sweep(SMALL, path, workers=2)
    assert counts.done == 12
    pooled, local = key_rows(path), key_rows(small_store)
    assert pooled.keys() == local.keys()
    for key, row in pooled.items():
        for column in ("status", "steps", "budget"):
            assert row[column] == local[key][column]
        for column in ("final_residual", "lr", "kernel_distance", "max_movement"):
            assert row[column] == pytest.approx(local[key][column], rel=1e-10, abs=1e-14)


def test_split_groups_spreads_seeds_over_workers():
    groups = SweepSpec.from_dict({"activations": ["exp"], "widths": [8], "n": [4], "seeds": 7}).groups()
    tasks = split_groups(groups, 3)
    assert [task.seeds for task in tasks] == [(0, 1, 2), (3, 4, 5), (6,)]
    assert {task.config_hash for task in tasks} == {groups[0].config_hash}
    assert split_groups(groups, 1) == groups


def test_progress_counts(tmp_path):
    spec = {"activations": ["relu"], "widths": [4, 8], "n": [3], "d": 2, "seeds": 2, "steps": 3}
    seen = []
    run_sweep(spec, tmp_path / "runs.db", progress=lambda c: seen.append((c.done, c.failed, c.skipped, c.running)))
    assert seen[0] == (0, 0, 0, 0) and seen[-1] == (4, 0, 0, 0)
    assert (0, 0, 0, 2) in seen and (2, 0, 0, 0) in seen  # a group in flight, then stored
    resumed = []
    run_sweep(spec, tmp_path / "runs.db", progress=lambda c: resumed.append((c.done, c.skipped, c.remaining)))
    assert resumed == [(0, 4, 0)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backend"):
        run_sweep(SMALL, "x.db", backend="slurm")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_sweep(SMALL, "x.db", workers=0)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        with mock.patch("torch.cuda.is_available", return_value=False):  # as on a machine without one
            run_sweep(SMALL, "x.db", device="cuda")
