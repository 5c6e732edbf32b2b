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


def test_cosine_teacher_is_a_sum_of_frequency_two_ridges_of_unit_spread():
    """Each ridge cos(2 <u_j, x> + b_j) with |u_j| = 1 has Laplacian -4 times itself in R^d, so the sum does:
    checked by central second differences (step h: error of order h^2 (2^4) / 12 per ridge, about 1e-5 at
    most here); and c normalises the spread over its 20000 fixed points of the sphere to one."""
    d, seed, h = 5, 7, 1e-3
    X = data.unit_sphere(30, d, seed=11)
    f = data.cosine_teacher(X, seed)
    laplacian = sum(data.cosine_teacher(X + h * e, seed) - 2 * f + data.cosine_teacher(X - h * e, seed)
                    for e in np.eye(d)) / h**2
    np.testing.assert_allclose(laplacian, -4 * f, atol=1e-5)
    assert np.abs(laplacian + 4 * f).max() > 0  # the difference is rounding and truncation, not a copy
    assert data.cosine_teacher(data.unit_sphere(20000, d, seed + 3_000_023), seed).std() == pytest.approx(1, rel=1e-12)


def test_teacher_split_is_nested_with_a_fixed_test_set_and_the_noise_of_its_seed():
    small, large = data.teacher_split(6, 4, 50, 0.1, seed=2), data.teacher_split(12, 4, 50, 0.1, seed=2)
    np.testing.assert_array_equal(small.X, large.X[:6])
    np.testing.assert_array_equal(small.y, large.y[:6])
    np.testing.assert_array_equal(small.X_test, large.X_test)
    np.testing.assert_array_equal(small.y_test, large.y_test)
    assert large.X.shape == (12, 4) and large.y.shape == (12, 1) and large.y_test.shape == (50, 1)
    np.testing.assert_array_equal(large.X, data.unit_sphere(12, 4, 2))
    np.testing.assert_array_equal(large.X_test, data.unit_sphere(50, 4, 4))
    # the labels are the teacher plus exactly the noise drawn from the split's seeds (seed + 1, seed + 3), up to
    # the rounding of that one sum (|f*| <= 4: 1e-15)
    np.testing.assert_allclose(large.y[:, 0] - data.cosine_teacher(large.X, 2),
                               0.1 * np.random.default_rng(3).standard_normal(12), rtol=0, atol=1e-15)
    np.testing.assert_allclose(large.y_test[:, 0] - data.cosine_teacher(large.X_test, 2),
                               0.1 * np.random.default_rng(5).standard_normal(50), rtol=0, atol=1e-15)


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


def pairs_by_loop(X, atol=1e-10):
    U = X / np.linalg.norm(X, axis=1)[:, None]
    return [(i, j) for i in range(len(U)) for j in range(i + 1, len(U)) if abs(sum(U[i] * U[j])) >= 1 - atol]


@pytest.mark.parametrize("d", [1, 4, 30])
def test_parallel_inputs_found_as_by_a_plain_loop(d):
    """The k-d tree counts the pairs |cos| >= 1 - atol and names the first one as a loop over i < j does."""
    X = np.random.default_rng(3).standard_normal((23, d))
    X[17] = -2.5 * X[5]  # antiparallel
    X[20] = X[9]  # duplicate
    X[22] = 0.3 * X[9]  # parallel to both
    X[11] = X[2] + 1e-3  # close, not parallel
    pairs = pairs_by_loop(X)
    assert len(pairs) == (23 * 22 // 2 if d == 1 else 4)  # in one dimension every pair is parallel
    assert data.parallel_pairs(X / np.linalg.norm(X, axis=1)[:, None]) == (len(pairs), pairs[0])
    if d > 1:
        assert data.check_theory_assumptions(X / np.abs(X).sum(1).max(), warn=False) == [
            "4 pair(s) of duplicate or parallel inputs (e.g. rows 5 and 17): then lambda = 0 and the convergence "
            "theorems do not apply"]


def test_parallel_inputs_at_the_tolerance():
    """1 - |cos| = atol / 2 is parallel, 2 atol is not, for either sign (angles 1e-5 and 2e-5 from +-u_0)."""
    angles = np.array([0.0, 1e-5, np.pi + 3e-5, np.pi - 1e-5, 1.0, 1.0 + 2e-5])
    X = np.stack([np.cos(angles), np.sin(angles)], 1)
    pairs = pairs_by_loop(X)
    assert pairs == [(0, 1), (0, 3)]  # 1 and 3 are 2e-5 from antiparallel
    assert data.parallel_pairs(X) == (2, (0, 1))


def test_digits_are_sklearns_images_centred_and_on_the_sphere():
    from sklearn.datasets import load_digits

    images, target = load_digits(return_X_y=True)
    rows = np.flatnonzero((target == 3) | (target == 5))
    centred = images[rows] - images[rows].mean(0)
    dataset = data.digits((3, 5), seed=2)
    assert dataset.X.shape == (len(rows), 64) and dataset.y.shape == (len(rows), 1) and len(rows) == 365
    np.testing.assert_allclose(np.linalg.norm(dataset.X, axis=1), 1.0, rtol=1e-14)
    # every returned row is one of sklearn's centred images of classes 3 and 5, each used once, label by class
    cosine = dataset.X @ (centred / np.linalg.norm(centred, axis=1, keepdims=True)).T
    match = cosine.argmax(1)
    np.testing.assert_allclose(cosine[np.arange(len(rows)), match], 1.0, rtol=1e-12)
    assert sorted(match) == list(range(len(rows)))
    np.testing.assert_array_equal(dataset.y[:, 0], np.where(target[rows[match]] == 3, 1.0, -1.0))
    # centred over the chosen classes: the unprojected rows sum to zero in every pixel
    np.testing.assert_allclose((dataset.X * np.linalg.norm(centred[match], axis=1)[:, None]).sum(0), 0, atol=1e-9)


def test_digits_subsets_are_nested_and_many_classes_are_one_hot():
    small, large = data.digits((3, 5), n=20, seed=4), data.digits((3, 5), n=50, seed=4)
    np.testing.assert_array_equal(small.X, large.X[:20])
    three = data.digits((7, 1, 2), n=90, seed=0)
    assert three.y.shape == (90, 3) and three.k == 3 and three.d == 64
    np.testing.assert_array_equal(three.y.sum(1), 1.0)
    from sklearn.datasets import load_digits

    images, target = load_digits(return_X_y=True)
    wanted = np.isin(target, (7, 1, 2))
    centred = images[wanted] - images[wanted].mean(0)
    nearest = (three.X @ centred.T).argmax(1)
    np.testing.assert_array_equal(np.array((7, 1, 2))[three.y.argmax(1)], target[wanted][nearest])


@pytest.mark.parametrize("classes, n, message", [((3,), None, "at least two"), ((3, 3), None, "distinct"),
                                                 ((3, 10), None, "0 to 9"), ((3, 5), 366, "365 images")])
def test_digits_refuses_bad_classes_and_sizes(classes, n, message):
    with pytest.raises(ValueError, match=message):
        data.digits(classes, n=n)


def test_digits_without_scikit_learn_says_what_to_install(without_sklearn):
    with pytest.raises(ValueError, match=r"needs scikit-learn: pip install scikit-learn$"):
        data.digits((3, 5))


def test_spec_options_reach_the_generators():
    """`name:key=value,...` builds the same data as calling the generator with those arguments."""
    dataset, _ = data.from_spec("teacher:width=3", n=20, d=4, k=2, seed=5)
    np.testing.assert_array_equal(dataset.y, data.teacher(20, 4, 2, 5, width=3).y)
    assert not np.array_equal(dataset.y, data.teacher(20, 4, 2, 5).y)  # width 3 is not the default 8
    moons, _ = data.from_spec("moons:noise=0.2", n=30, seed=1)
    np.testing.assert_array_equal(moons.X, data.moons(30, noise=0.2, seed=1).X)
    circles, _ = data.from_spec("circles:factor=0.3,noise=0", n=40, seed=2)
    radii = np.sort(np.linalg.norm(circles.X, axis=1))
    np.testing.assert_allclose(radii[:20], 0.3, rtol=1e-12)  # noise 0: exactly the two radii
    np.testing.assert_allclose(radii[20:], 1.0, rtol=1e-12)


def test_spec_parser_keeps_commas_inside_a_value():
    assert data.parse_spec("digits:classes=3,5,seed=2") == ("digits", {"classes": "3,5", "seed": "2"})
    assert data.parse_spec(" sphere ") == ("sphere", {})


@pytest.mark.parametrize("spec, message", [
    ("cube", "unknown dataset 'cube'"),
    ("sphere:noise=1", "sphere has no option 'noise'"),
    ("moons:noise=loud", "option noise='loud' is invalid"),
    ("moons:0.1", "options are key=value"),
    ("teacher:width=2,width=3", "repeated option"),
    (":x=1", "has no name"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        data.from_spec(spec, n=10, d=3)


def test_csv_spec_picks_label_columns_and_reports_theory_problems(tmp_path):
    table = np.array([[0.1, 0.2, 1.0, 2.0], [0.3, 0.1, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]])
    np.savetxt(tmp_path / "t.csv", table, delimiter=",")
    dataset, problems = data.from_spec(f"{tmp_path / 't.csv'}:labels=2,3")
    np.testing.assert_array_equal(dataset.X, table[:, :2])
    np.testing.assert_array_equal(dataset.y, table[:, 2:])
    assert len(problems) == 1 and "max ||x_i|| = 5 > 1" in problems[0]  # ||(3, 4)|| = 5
    projected, problems = data.from_spec(str(tmp_path / "t.csv"), label_columns="2,3", normalize="ball")
    np.testing.assert_allclose(projected.X, table[:, :2] / 5, rtol=1e-15)
    assert problems == []


def test_binary_and_non_numeric_files_say_what_is_wrong(tmp_path):
    (tmp_path / "b.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        data.load(tmp_path / "b.csv")
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read .* as .npz"):
        data.load(tmp_path / "e.npz")
    np.savez(tmp_path / "c.npz", X=np.array([[1 + 1j, 2.0]]), y=np.array([1.0]))
    with pytest.raises(ValueError, match="array X .* has dtype complex128; X and y must be real numbers"):
        data.load(tmp_path / "c.npz")
    np.savez(tmp_path / "s.npz", X=np.array([["1.5", "2"]]), y=np.array([1.0]))
    with pytest.raises(ValueError, match="array X .* has dtype <U3"):
        data.load(tmp_path / "s.npz")


def test_comma_separated_specs_keep_their_own_commas():
    assert data.split_specs("sphere,digits:classes=3,5,teacher:width=4") == [
        "sphere", "digits:classes=3,5", "teacher:width=4"]
    assert data.split_specs("digits:classes=1,2,3") == ["digits:classes=1,2,3"]
