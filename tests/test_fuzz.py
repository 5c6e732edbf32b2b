"""Fuzzing at the door (issue 16.5): whatever bytes a data file or a sweep spec holds, loading it gives a
result or a ValueError with a one-line message, never another exception."""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overparam import data
from overparam.sweep.spec import GRID_KEYS, SCALAR_KEYS, SweepSpec, load_spec

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def loads_or_says_why(load, *args):
    """load(*args) returns a value or raises ValueError with one non-empty line; returns the value or None."""
    try:
        return load(*args)
    except ValueError as error:
        text = str(error)
        assert text.strip() and "\n" not in text.strip(), repr(text)
        return None


def check_dataset(dataset):
    if dataset is not None:  # what the loader accepts is what the library needs
        assert dataset.X.ndim == 2 and dataset.y.ndim == 2 and dataset.X.shape[0] == dataset.y.shape[0] >= 1
        assert np.isfinite(dataset.X).all() and np.isfinite(dataset.y).all()
        assert dataset.X.dtype == dataset.y.dtype == np.float64


cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.text(alphabet=" -+.eEinfa0123456789x\"'", max_size=6))
csv_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.lists(cells, min_size=0, max_size=5).map(",".join), max_size=8).map("\n".join),
)


@FUZZ
@given(text=csv_text, header=st.booleans(), columns=st.one_of(st.none(), st.lists(st.integers(-6, 6), max_size=3)))
def test_any_csv_loads_or_raises_one_line(tmp_path, text, header, columns):
    path = tmp_path / "fuzz.csv"
    path.write_text(("a,b,c\n" if header else "") + text, encoding="utf-8")
    check_dataset(loads_or_says_why(data.load, path, columns))


@FUZZ
@given(content=st.binary(max_size=300))
def test_any_bytes_as_csv_or_npz_load_or_raise_one_line(tmp_path, content):
    for name in ("fuzz.csv", "fuzz.npz"):
        path = tmp_path / name
        path.write_bytes(content)
        check_dataset(loads_or_says_why(data.load, path))


arrays = st.one_of(
    st.lists(st.lists(st.floats(), min_size=0, max_size=4), max_size=5).map(
        lambda rows: np.array(rows, dtype=object) if len({len(r) for r in rows}) > 1 else np.array(rows)),
    st.integers(0, 4).map(lambda ndim: np.zeros((2,) * ndim)),
    st.text(max_size=5).map(np.array),
    st.just(np.array([1 + 2j, 3j])),
    st.just(np.array([True, False])),
)


@FUZZ
@given(X=arrays, y=arrays, names=st.sampled_from([("X", "y"), ("X",), ("x", "y"), ("X", "y", "z")]))
def test_any_npz_arrays_load_or_raise_one_line(tmp_path, X, y, names):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, array in zip(names, (X, y, X)):
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=True)  # pickles must be refused
    path = tmp_path / "fuzz.npz"
    path.write_bytes(buffer.getvalue())
    check_dataset(loads_or_says_why(data.load, path))


@FUZZ
@given(text=st.text(max_size=300))
def test_any_toml_text_gives_a_spec_or_one_line(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    spec = loads_or_says_why(load_spec, path)
    assert spec is None or isinstance(spec, SweepSpec)


values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(),
                                st.text(max_size=12), st.sampled_from(["auto", "relu", "theory:2", "seed", "1/m",
                                                                       "teacher:width=4", "moons:noise=x"])),
                      lambda inner: st.lists(inner, max_size=3), max_leaves=6)
tables = st.dictionaries(st.sampled_from(GRID_KEYS + SCALAR_KEYS + ("colour",)), values, max_size=8)
complete = st.fixed_dictionaries({"activations": values, "widths": values, "n": values}).flatmap(
    lambda required: tables.map(lambda extra: {**extra, **required}))


@FUZZ
@given(table=st.one_of(tables, complete))
def test_any_sweep_table_gives_a_spec_or_one_line(table):
    spec = loads_or_says_why(SweepSpec.from_dict, table)
    if spec is not None:
        assert spec.size >= 1 and all(group.seeds for group in spec.groups())


@FUZZ
@given(spec=st.one_of(st.text(max_size=30),
                      st.text(alphabet="spheretachmoonscirldigts:=,0123456789 -.xwidthnoisfa", max_size=30)))
def test_any_data_spec_gives_a_dataset_or_one_line(spec):
    check_dataset(loads_or_says_why(lambda: data.from_spec(spec, 5, 3)[0]))


@pytest.mark.parametrize("spec", ["", ":", "a:b", "sphere:=1", "teacher:width=", "teacher:width=2.5",
                                  "moons:noise=1,noise=2", "x.csv:labels=a"])
def test_malformed_data_specs_raise_one_line(spec):
    loads_or_says_why(data.from_spec, spec, 5, 3)
