"""The documentation site: it builds strictly (running the tutorial), its links and assets resolve
offline, it documents every command and study section, and it renders in headless Chromium."""

from __future__ import annotations

import functools
import importlib.util
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import headless_browser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: A fenced code block: language, the rest of the opening line (e.g. title="x.py"), the code.
FENCE = re.compile(r'^```(\w+)([^\n]*)\n(.*?)^```', re.M | re.S)



@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`mkdocs build --strict`: a broken reference, link, page or tutorial cell fails it."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_tutorial_is_stored_without_outputs():
    notebook = json.loads((DOCS / "tutorial.ipynb").read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, "the tutorial has no code cells"
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), \
        "strip the tutorial's outputs: nbstripout docs/tutorial.ipynb"


def _commands() -> dict:
    import typer

    from overparam.cli import app

    return dict(typer.main.get_command(app).commands)


def test_cli_page_documents_every_command_and_only_those():
    page = (DOCS / "cli.md").read_text()
    documented = re.findall(r"<!-- options: ([\w-]+) -->", page)
    assert sorted(documented) == sorted(_commands())
    headings = re.findall(r"^## `overparam ([\w-]+)`", page, re.M)
    assert headings == documented


def test_commands_on_every_page_use_real_options():
    """Each `overparam COMMAND --flag` in the README and the pages names a command and flags it has."""
    commands = _commands()
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for _, _, code in FENCE.findall(page.read_text()):
            for line in code.replace("\\\n", " ").splitlines():
                words = line.split("#")[0].split()
                if words[:1] != ["overparam"] or len(words) < 2:
                    continue
                assert words[1] in commands, f"{page.name}: {line}"
                flags = {flag for param in commands[words[1]].params for flag in param.opts + param.secondary_opts}
                used = {word.split("=")[0] for word in words[2:] if word.startswith("--")}
                assert used <= flags, f"{page.name}: {line} uses {sorted(used - flags)}"


def test_cli_page_tables_list_each_option(site):
    page = (site / "cli.html").read_text()
    for name, command in _commands().items():
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for flag in param.opts if param.param_type_name == "option" else []:
                assert f"<code>{flag}" in page, f"cli page lacks {flag} of overparam {name}"


def test_reproducing_page_covers_every_study_section(site):
    from overparam.study import SECTIONS

    page = (site / "reproducing.html").read_text()
    for key in SECTIONS:
        assert f'id="{key}"' in page


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproducing_page_fails_on_a_section_that_no_longer_exists():
    from mkdocs.exceptions import PluginError

    from overparam.study import SECTIONS

    hooks = _hooks()
    page = (DOCS / "reproducing.md").read_text()
    with pytest.raises(PluginError, match="no_such_section"):
        hooks.study_sections(page + "\n## section: no_such_section\n")
    removed = page.replace(f"## section: {SECTIONS[0]}\n", "")  # then generated from its module
    assert f"{{#{SECTIONS[0]}}}" in hooks.study_sections(removed)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.refs = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "a" and key == "src"):
                self.refs.append((tag, attrs[key]))


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_links_and_assets_resolve_within_the_site(site):
    """Every internal link reaches an existing page and anchor; scripts, styles and images are all local."""
    # 404.html is served at any depth, so its links are absolute by design.
    pages = {path: _parse(path) for path in site.rglob("*.html")
             if "assets/mathjax" not in path.as_posix() and path.name != "404.html"}
    broken, external = [], []
    for path, links in pages.items():
        for tag, ref in links.refs:
            parts = urlsplit(ref)
            if parts.scheme in ("http", "https") or ref.startswith("//"):
                if tag != "a":
                    external.append(f"{path.relative_to(site)}: <{tag}> {ref}")
                continue
            if parts.scheme or (not parts.path and not parts.fragment):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {ref}")
            elif parts.fragment and target.suffix == ".html" and target in pages \
                    and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{path.relative_to(site)}: {ref} (no such anchor)")
    assert broken == []
    assert external == [], "the site must render offline"


#: What a docs page reports once MathJax has typeset it: its figures, MathJax's output elements, TeX
#: errors, and TeX left in its visible text outside code (math that was never typeset).
REPORT_MATH = r"""(function () {
  var images = Array.from(document.querySelectorAll('article img'));
  var text = (document.querySelector('article') || document.body).cloneNode(true);
  text.querySelectorAll('pre, code, script, style, .MathJax, .MathJax_Display, .MathJax_Preview').forEach(
    function (e) { e.remove(); });
  return {images: images.length,
          broken: images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                        .map(function (img) { return (img.getAttribute('src') || '').slice(0, 80); }),
          typeset: document.querySelectorAll('.MathJax, .MathJax_Display').length,
          math_errors: document.querySelectorAll('.noError, .merror, .MathJax_Error').length,
          tex_left: (text.textContent.match(/\\[A-Za-z()\[\]{|]+|\$\$/g) || []).slice(0, 10)};
})()"""
#: MathJax 2's HTML-CSS output probes for fonts with a face whose source is about:blank, which Chromium
#: reports as a blocked cross-origin font; no font the pages use is involved.
MATHJAX_FONT_PROBE = r"Access to font at 'about:blank'"
AFTER_MATHJAX = "if (window.MathJax && MathJax.Hub) { MathJax.Hub.Register.StartupHook('End', __report); } else { __report(); }"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(site):
    """The site over HTTP on the loopback address, as `mkdocs serve` would give it."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _render(served, page: str, tmp_path) -> dict:
    site, url = served
    folder = Path(page).parent.as_posix()
    return headless_browser.render(site / page, REPORT_MATH, tmp_path / "chromium-profile",
                                   url=url if folder == "." else f"{url}/{folder}",
                                   when_loaded=AFTER_MATHJAX, budget_ms=20000, harmless=MATHJAX_FONT_PROBE)


@pytest.mark.parametrize("page", ["index.html", "mathematics.html", "reproducing.html", "cli.html",
                                  "activations.html", "tutorial.html", "api/networks.html", "api/kernels.html"])
def test_page_renders_its_formulas_and_figures(served, tmp_path, page):
    site, _ = served
    html = (site / page).read_text()
    report = _render(served, page, tmp_path)
    assert report["problems"] == [] and report["broken"] == []
    assert report["math_errors"] == 0 and report["tex_left"] == []
    assert report["typeset"] >= html.count('class="arithmatex"') and report["typeset"] > 0
    if page == "mathematics.html":
        assert html.count('class="arithmatex"') > 100
    if page == "tutorial.html":  # the notebook's figures, inline
        figures = len(re.findall(r'<img[^>]*src="data:image/png;base64', html))
        assert report["images"] >= figures >= 5


def test_activation_page_code_runs(tmp_path, monkeypatch):
    """docs/activations.md as a reader would use it: its module written to a file, its Python run in
    order, its commands run by the CLI, each succeeding (but `overparam study`, minutes long; its
    flags are checked by test_commands_on_every_page_use_real_options)."""
    from typer.testing import CliRunner

    from overparam.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace, commands = {}, 0
    for language, info, code in FENCE.findall((DOCS / "activations.md").read_text()):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            (tmp_path / title.group(1)).write_text(code)
        elif language == "python":
            exec(compile(code, "activations.md", "exec"), namespace)
        elif language == "bash":
            for line in code.splitlines():
                assert line.startswith("overparam "), line
                if line.startswith("overparam study "):
                    continue
                result = CliRunner().invoke(app, line.split()[1:])
                assert result.exit_code == 0, f"{line}\n{result.output}"
                commands += 1
    assert {"SINE", "SWISH", "H_star", "closed"} <= set(namespace) and commands >= 3


def test_section_page_code_runs(tmp_path, monkeypatch):
    """docs/sections.md as a reader would use it: its section module written to a file, its Python run in
    order (which registers the section, runs it and asserts it completed); then the tables' numbers against
    the networks' outputs recomputed here, and a second run reuses every unit."""
    import csv

    import numpy as np
    import torch

    from overparam import TwoLayerNet
    from overparam.data import unit_sphere
    from overparam.study import registry, run_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "MODULES", dict(registry.MODULES))
    namespace = {}
    for language, info, code in FENCE.findall((DOCS / "sections.md").read_text()):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            (tmp_path / title.group(1)).write_text(code)
        elif language == "python":
            exec(compile(code, "sections.md", "exec"), namespace)
    config = namespace["config"]
    with open(tmp_path / "out" / "initial_output" / "tables" / "initial_output.csv", newline="") as handle:
        rows = {(r["activation"], int(r["m"])): r for r in csv.DictReader(handle)}
    X = torch.from_numpy(unit_sphere(32, config.d, config.seed))
    for (activation, width), row in rows.items():
        rms = [float(TwoLayerNet(config.d, width, 1, activation, init="independent", seed=s)(X).pow(2).mean().sqrt())
               for s in range(3)]
        assert float(row["rms F(W(0))"]) == pytest.approx(np.mean(rms), rel=1e-12)
        assert float(row["± se"]) == pytest.approx(np.std(rms, ddof=1) / np.sqrt(3), rel=1e-10)
    again = run_study(config, tmp_path / "out" / "initial_output")
    assert again.computed == 0 and again.reused == 2 * 3 * 3
