"""Sweep specs: the issue's TOML form, flag-style strings, validation, the theory budget of docs/mathematics.md#thresholds."""

import math

import numpy as np

import pytest

from overparam.sweep.spec import SweepSpec, config_hash, load_spec, theory_steps

ISSUE_EXAMPLE = """
[sweep]
activations = ["relu", "exp", "softmax"]
widths = [64, 128, 256, 512]
n = [16, 32, 64]
d = 8
seeds = 8
init = "coupled"
data = "sphere"
lr = "auto"
tol = 1e-3
steps = 2000
"""


def test_issue_example_expands_into_groups_of_seeds(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(ISSUE_EXAMPLE)
    spec = load_spec(path)
    groups = spec.groups()
    assert len(groups) == 3 * 4 * 3 and spec.size == 3 * 4 * 3 * 8
    assert all(group.seeds == tuple(range(8)) for group in groups)
    first = groups[0].config
    assert first == {"activation": "relu", "width": 64, "n": 16, "d": 8, "k": 1, "init": "coupled",
                     "scale": "default", "sigma": 1.0, "data": "sphere", "data_seed": 0, "lr": "auto",
                     "tol": 1e-3, "steps": 2000, "dtype": "float64", "record_every": None, "optimizer": "gd"}
    hashes = {group.config_hash for group in groups}
    assert len(hashes) == len(groups)
    assert groups[0].config_hash == config_hash(dict(reversed(list(first.items()))))  # key order is irrelevant


def test_flag_overrides_and_string_values(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(ISSUE_EXAMPLE)
    spec = load_spec(path, {"widths": ["32", "64"], "seeds": "3", "steps": "theory:3", "lr": ["auto", "0.5"]})
    assert spec.widths == (32, 64) and spec.seeds == (0, 1, 2) and spec.lr == ("auto", 0.5)
    assert spec.steps == "theory:3"
    assert spec.groups()[0].config["max_steps"] == 100_000
    explicit = SweepSpec.from_dict({"activations": "exp", "widths": 8, "n": 4, "seeds": [5, 2]})
    assert explicit.seeds == (5, 2) and explicit.activations == ("exp",)


@pytest.mark.parametrize("table,message", [
    ({"activations": ["exp"], "widths": [8], "n": [4], "width": 3}, "unknown sweep key"),
    ({"activations": ["exp"], "n": [4]}, "needs widths"),
    ({"activations": ["swish"], "widths": [8], "n": [4]}, "unknown activation 'swish'"),
    ({"activations": ["exp"], "widths": [7], "n": [4]}, "every width must be even"),
    ({"activations": ["exp"], "widths": [8, 8], "n": [4]}, "repeated values"),
    ({"activations": ["exp"], "widths": [0], "n": [4], "init": "independent"}, "positive integer"),
    ({"activations": ["exp"], "widths": [8], "n": [4.5]}, "positive integer"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "steps": "theory:-1"}, "positive multiple"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "steps": "theory:2", "tol": 0}, "needs tol > 0"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "steps": "many"}, "number of steps or 'theory:c'"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data": "moons"}, "use d = 2"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data": "moons:noise=0.1"}, "use d = 2"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data": "teacher:colour=1"}, "teacher has no option 'colour'"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data": 3}, "not a data spec"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "d": 64, "data": "digits:classes=1,2,3"}, "use d = 64 and k = 3"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data": "digits:classes=3"}, "at least two distinct"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data": "mnist"}, "unknown dataset .mnist."),
    ({"activations": ["exp"], "widths": [8], "n": [4], "lr": -1}, "lr must be a positive"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "scale": "huge"}, "unknown scale"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "seeds": [1, 1]}, "distinct"),
    ({"activations": ["exp"], "widths": [8], "n": [4], "data_seed": "each"}, "data_seed must be"),
])
def test_bad_specs_say_what_to_fix(table, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec.from_dict(table)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[sweep]\nwidths = [64,\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_spec(broken)
    other = tmp_path / "other.toml"
    other.write_text("[train]\nwidth = 3\n")
    with pytest.raises(ValueError, match="no \\[sweep\\] table"):
        load_spec(other)


def test_theory_budget_follows_spec_section_7():
    # T = c * 2 log(||F(0) - y|| / eps) / (eta m kappa^2 lambda)
    lr, width, kappa, lam, r0, tol = 0.01, 64, 0.125, 0.3, 4.0, 1e-3
    expected = 3 * 2 * math.log(r0 / tol) / (lr * width * kappa**2 * lam)
    assert theory_steps(3.0, r0, tol, lr, width, kappa, lam, cap=10**9) == math.ceil(expected)
    assert theory_steps(3.0, r0, tol, lr, width, kappa, lam, cap=100) == 100
    assert theory_steps(3.0, 1e-4, tol, lr, width, kappa, lam, cap=100) == 0
    assert theory_steps(3.0, r0, tol, lr, width, kappa, 0.0, cap=77) == 77  # lambda = 0: no predicted rate


def test_a_data_spec_with_options_reaches_the_runs():
    from overparam import data
    from overparam.sweep.task import group_data

    spec = SweepSpec.from_dict({"activations": ["exp"], "widths": [8], "n": [5], "d": 3, "seeds": 2,
                                "data": ["teacher:width=3", "sphere"]})
    teacher = next(g for g in spec.groups() if g.config["data"] == "teacher:width=3")
    X, y = group_data(teacher.config, teacher.seeds)
    expected = data.teacher(5, 3, 1, 0, width=3)
    np.testing.assert_array_equal(X, expected.X)
    np.testing.assert_array_equal(y, expected.y)
