"""Fuzzing at the door (issue 16.5): whatever bytes a data file or a sweep spec holds, loading it gives a
result or a ValueError with a one-line message, never another exception; and every option of every
command keeps the command line's contract (issue 26.4, at the end)."""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
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
    with pytest.raises(ValueError) as error:  # a malformed spec silently accepted fails here (issue 21)
        data.from_spec(spec, 5, 3)
    text = str(error.value).strip()
    assert text and "\n" not in text and repr(spec) in text


# Every option of every command (issue 26.4). The commands and their options are read from the typer app,
# so an option added later is fuzzed too. Each example runs one command in-process with a few options
# given hostile values (wrong type, sign, size or name) over small working arguments, and checks the
# contract: exit 0 with its normal output, exit 1 with one line for a run that failed or diverged, or
# exit 2 with exactly one line on stderr and no traceback and no file written.

#: Arguments that keep a valid run small; the fuzzed options come after them and override them.
BASE = {
    "train": ["--n", "6", "--d", "3", "--width", "8", "--steps", "5"],
    "ntk": ["--n", "6", "--d", "3", "--width", "8"],
    "bound": ["--n", "10", "--lambda", "0.1", "--delta", "0.1"],
    "sweep": ["--activations", "relu", "--widths", "4", "--n", "3", "--d", "3", "--seeds", "1", "--steps", "3"],
    "threshold": ["--bootstrap", "10"],
    "results": [],
    "diffusion": ["--n", "16", "--width", "8", "--steps", "3", "--samples", "20", "--score-samples", "20",
                  "--sampler-steps", "4", "--eval-every", "2"],
    "study": ["--only", "concentration"],
}
#: The largest value a valid run may draw for an option (so that it finishes in well under a second or two);
#: other integer options draw up to 8.
CAPS = {"n": 16, "width": 16, "d": 6, "k": 3, "steps": 20, "monte_carlo": 3, "bootstrap": 20, "samples": 40,
        "score_samples": 40, "sampler_steps": 8, "noise_draws": 3, "batch_size": 16, "dense_limit": 64,
        "max_steps": 50, "record_every": 10, "nproc": 1, "workers": 1, "threads": 2, "widths": 16, "seeds": 2}
#: Options whose huge values the door refuses before any work (`overparam.resources`): these also draw 1e13..1e18.
REFUSED_WHEN_HUGE = {"n", "width", "d", "widths", "samples", "score_samples", "noise_draws"}
#: Values never drawn: a Ray cluster is started by --backend ray (slow, other processes).
NEVER = {"backend": {"ray"}}


def command_options():
    import typer.main

    from overparam.cli import app

    group = typer.main.get_command(app)
    return {name: [p for p in command.params if p.name != "help"] for name, command in group.commands.items()}


OPTIONS = command_options()


def kind(param) -> str:
    """'int', 'float', 'bool', 'Path' or 'str': the option's annotation as typer reads it."""
    bare = param.bare_type() if hasattr(param, "bare_type") else getattr(param.type, "name", "str")
    return {"integer": "int", "boolean": "bool", "path": "Path"}.get(str(bare), str(bare))


def tokens(param) -> list[str]:
    """Words of the option's help and its default: its valid values, mostly (`NEVER` removed)."""
    words = [word.strip("()[],;'\"") for word in (param.help or "").split()]
    words += [str(param.default)] if param.default not in (None, False, True) else []
    return sorted({w for w in words if w and w not in NEVER.get(param.name, ())})


def number_text(param) -> st.SearchStrategy[str]:
    cap = CAPS.get(param.name, 8)
    small = st.integers(-2, cap).map(str)
    if param.name in REFUSED_WHEN_HUGE:
        return st.one_of(small, st.integers(10**13, 10**18).map(str))
    return small


def value(param, folder) -> st.SearchStrategy[str]:
    """A hostile value for `param`, as command-line text."""
    garbage = st.one_of(st.sampled_from(["", "abc", "nan", "inf", "-inf", "1.5", "-1", "0", "1e400", "0x10", "--"]),
                        st.text(alphabet="abc,:=./-+1e ", max_size=12))
    if kind(param) == "int":
        return st.one_of(number_text(param), garbage)
    if kind(param) == "float":
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), garbage)
    if kind(param) == "Path":
        (folder / "taken").write_text("a file")
        return st.sampled_from([str(folder / "out"), str(folder / "new" / "deeper"), str(folder / "taken"),
                                str(folder / "taken" / "sub"), str(folder), "/proc/overparam", "", "x" * 300,
                                "x" * 300 + "/f"])
    choices = tokens(param)
    numbers = st.lists(number_text(param), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.sampled_from(choices) if choices else garbage, numbers, garbage,
                     st.lists(st.sampled_from(choices or ["x"]), min_size=1, max_size=3).map(",".join))


@st.composite
def argument_lists(draw, command: str, folder):
    """[command, *BASE, *a few options with hostile values, maybe an unknown option]."""
    params = [p for p in OPTIONS[command] if p.param_type_name == "option"]
    chosen = draw(st.lists(st.sampled_from(params), unique_by=lambda p: p.name, max_size=4)) if params else []
    args = [command, *BASE.get(command, [])]
    if command in ("threshold", "results"):
        args.insert(1, draw(st.sampled_from([str(folder / "runs.db")] * 3 + [str(folder / "none.db"), str(folder)])))
    for param in chosen:
        if param.is_flag:
            args.append(param.opts[0])
        else:
            args += [param.opts[0], draw(value(param, folder))]
    if draw(st.integers(0, 9)) == 0:
        args.append("--" + draw(st.text(alphabet="abcdefgh-", min_size=1, max_size=8)))
    return args


def files_under(folder) -> dict:
    """Every file under folder and its contents (a SQLite store's: its rows and schema, which a reader
    leaves as they were though it may rewrite the header)."""
    import sqlite3

    def contents(path):
        if path.suffix != ".db":
            return path.read_bytes()
        db = sqlite3.connect(path)
        try:
            return list(db.iterdump())
        finally:
            db.close()  # the last connection's close removes the -wal and -shm files

    return {path: contents(path) for path in folder.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def runs_store(tmp_path_factory):
    """A small store for threshold and results (a sweep of 2 widths x 2 seeds)."""
    from overparam.sweep import run_sweep

    store = tmp_path_factory.mktemp("store") / "runs.db"
    run_sweep({"activations": ["relu"], "widths": [4, 8], "n": [3, 4], "d": 3, "seeds": 2, "steps": 20}, store)
    return store


@pytest.fixture
def instant_study_sections(monkeypatch):
    """Study sections that finish at once: the fuzz checks the command's door, not the experiments."""
    from overparam.study import registry, runner
    from overparam.study.framework import Report, StudySection

    real = registry.section

    class Instant(StudySection):
        def __init__(self, key):
            self.KEY, self.TITLE, self.Config = key, key, real(key).Config

        def units(self, study, cfg):
            return []

        def report(self, study, cfg, records):
            return Report(reading=["instant"])

    monkeypatch.setattr(runner.registry, "section", Instant)


@pytest.mark.parametrize("command", sorted(OPTIONS))
# derandomize: CI runs the same examples every time (set it to False locally to explore new ones)
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_every_option_of_every_command_keeps_the_contract(command, data, tmp_path_factory, runs_store, capsys,
                                                          monkeypatch, instant_study_sections):
    import json
    import shutil

    from overparam.cli import run

    folder = tmp_path_factory.mktemp("fuzz")
    shutil.copy(runs_store, folder / "runs.db")
    args = data.draw(argument_lists(command, folder))
    before = files_under(folder)
    monkeypatch.chdir(folder)  # default output paths (out/..., runs.db) land here
    monkeypatch.setattr("sys.argv", ["overparam", *args])
    with pytest.raises(SystemExit) as exit_info:
        run()
    out, err = capsys.readouterr()
    code = exit_info.value.code or 0
    event(f"exit {code}")  # --hypothesis-show-statistics: how many examples ran, failed at the door, ...
    lines = err.strip().splitlines()
    assert "Traceback" not in err, (args, err)
    if code == 0:
        if "--json" in args:
            json.loads(out)
        else:
            assert out.strip(), (args, err)
    elif code == 1:  # a run that failed or diverged: its result printed, one line saying so
        assert len(lines) == 1 and lines[0].startswith("overparam: "), (args, err)
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("overparam: error: "), (args, code, err)
        assert files_under(folder) == before, args  # nothing written, nothing changed
