"""The Ray backend on a real local Ray instance writes the same rows as the local backend."""

import pytest

from overparam.sweep import Store, run_sweep

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'overparam[ray]' to test the ray backend")

SPEC = {"activations": ["exp", "softmax"], "widths": [8, 16], "n": [5], "d": 3, "seeds": 2, "steps": 60,
        "tol": 1e-3}


def test_ray_backend_equals_local(tmp_path):
    run_sweep(SPEC, tmp_path / "local.db", workers=1)
    counts = run_sweep(SPEC, tmp_path / "ray.db", backend="ray", workers=2)  # a local instance, num_cpus=2
    assert counts.done == 8 and counts.failed == 0
    assert not ray.is_initialized()  # the instance it started is shut down again
    with Store(tmp_path / "local.db") as local, Store(tmp_path / "ray.db") as remote:
        expected = {(r["config_hash"], r["seed"]): r for r in local.runs()}
        rows = remote.runs()
        assert {(r["config_hash"], r["seed"]) for r in rows} == expected.keys()
        for row in rows:
            other = expected[(row["config_hash"], row["seed"])]
            for column in ("status", "steps", "width", "activation", "n", "seed"):
                assert row[column] == other[column]
            for column in ("final_residual", "lr", "kernel_distance", "lambda_min", "max_movement"):
                assert row[column] == pytest.approx(other[column], rel=1e-10, abs=1e-14)
            assert remote.curve(row)["residual_norm"] == pytest.approx(local.curve(other)["residual_norm"], rel=1e-10)


def test_unreachable_cluster_fails_fast(tmp_path):
    with pytest.raises(ValueError, match="cannot reach the Ray cluster at '127.0.0.1:1'"):
        run_sweep(SPEC, tmp_path / "runs.db", backend="ray", ray_address="127.0.0.1:1")
