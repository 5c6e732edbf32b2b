"""overparam.data: generators, projection, file loading and the theory-assumption checks."""

import numpy as np
import pytest

from overparam import data


def test_sphere_points_are_unit_and_isotropic():
    dataset = data.sphere(4000, 3, k=2, seed=1)
    assert dataset.X.shape == (4000, 3) and dataset.y.shape == (4000, 2)
    np.testing.assert_allclose(np.linalg.norm(dataset.X, axis=1), 1.0, rtol=1e-14)
    # E[x x^T] = I/d on the sphere; 4000 points give entry errors of about 0.005.
    np.testing.assert_allclose(dataset.X.T @ dataset.X / 4000, np.eye(3) / 3, atol=0.02)
    np.testing.assert_array_equal(data.sphere(10, 3, seed=1).X, data.sphere(10, 3, seed=1).X)


@pytest.mark.parametrize("name", ["teacher", "moons", "circles"])
def test_builtin_sets_lie_in_the_unit_ball(name):
    dataset = data.builtin(name, 200, d=5, seed=0)
    assert np.linalg.norm(dataset.X, axis=1).max() <= 1 + 1e-12
    assert dataset.n == 200 and np.all(np.isfinite(dataset.y))


def test_teacher_labels_are_a_network_of_the_inputs():
    dataset = data.teacher(50, 4, seed=3)
    assert np.sqrt(np.mean(dataset.y**2)) == pytest.approx(1.0, rel=1e-12)
    assert abs(dataset.y.mean()) < 1e-12


def test_projection_modes():
    X = np.array([[3.0, 4.0], [0.0, 1.0]])
    np.testing.assert_allclose(data.project_to_ball(X, "ball"), X / 5)
    np.testing.assert_allclose(np.linalg.norm(data.project_to_ball(X, "sphere"), axis=1), 1.0)
    with pytest.raises(ValueError, match="normalisation"):
        data.project_to_ball(X, "cube")


def test_load_npz_and_csv(tmp_path):
    X = np.arange(12.0).reshape(4, 3) / 20
    y = np.array([1.0, -1.0, 0.5, 2.0])
    np.savez(tmp_path / "d.npz", X=X, y=y)
    loaded = data.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(loaded.X, X)
    np.testing.assert_array_equal(loaded.y[:, 0], y)
    np.savetxt(tmp_path / "d.csv", np.column_stack([y, X]), delimiter=",", header="label,a,b,c", comments="")
    loaded = data.load(tmp_path / "d.csv", label_columns=[0])
    np.testing.assert_allclose(loaded.X, X)
    np.testing.assert_allclose(loaded.y[:, 0], y)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", X=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['y'\]"):
        data.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", X=np.array([[np.nan, 1.0]]), y=np.ones(1))
    with pytest.raises(ValueError, match="non-finite"):
        data.load(tmp_path / "nan.npz")
    np.savez(tmp_path / "rows.npz", X=np.ones((3, 2)), y=np.ones(2))
    with pytest.raises(ValueError, match="3 rows but y has 2"):
        data.load(tmp_path / "rows.npz")
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(ValueError, match="unsupported"):
        data.load(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="n must be"):
        data.sphere(0, 3)


@pytest.mark.parametrize("text,match", [
    ("", "no data rows"), ("a,b,c\n", "no data rows"),
    ("1,2,3\n1,2\n", "number of columns changed from 3 to 2 at row 2$"),
    ("1,2,3\nnan,2,1\n", "X has 1 non-finite"), ("1,2,inf\n", "y has 1 non-finite"),
])
def test_bad_csv_files(tmp_path, text, match):
    import warnings

    (tmp_path / "d.csv").write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error, not a numpy warning, tells the user what is wrong
        with pytest.raises(ValueError, match=match):
            data.load(tmp_path / "d.csv")


def test_theory_warnings_for_parallel_inputs_and_large_norms():
    X = np.array([[0.6, 0.0], [0.0, 0.5], [-0.3, 0.0]])
    with pytest.warns(data.TheoryAssumptionWarning, match="1 pair"):
        problems = data.check_theory_assumptions(X)
    assert len(problems) == 1
    with pytest.warns(data.TheoryAssumptionWarning, match="> 1"):
        data.check_theory_assumptions(np.array([[2.0, 0.0], [0.0, 1.0]]))
    assert data.check_theory_assumptions(data.sphere(50, 3).X) == []
