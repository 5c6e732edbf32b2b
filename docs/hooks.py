"""MkDocs hooks: MathJax served from its PyPI package, and the pages that are generated from the code.

- MathJax 2.7 comes from `jupyter_server_mathjax` (the copy Jupyter serves), so the site needs no network;
  pages with formulas (pymdownx.arithmatex's \\( \\) and \\[ \\] spans) load it, with `MATHJAX_CONFIG`.
- cli.md: each `<!-- options: COMMAND -->` becomes the table of that command's arguments and options, read
  from the click command behind `overparam COMMAND`, so the page cannot fall behind `--help`.
- reproducing.md: a heading `## section: KEY` becomes the section's title as the report prints it;
  every study section the page does not describe gets its title and module docstring appended, so a
  new section is never missing from the site, and a described section that no longer exists fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupyter_server_mathjax
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File
from mkdocs.utils import get_relative_url

MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
#: MathJax 2.7's pieces the pages use (TeX input, HTML-CSS output with the STIX-Web fonts); its
#: localisations and the SVG output are left out of the site.
MATHJAX_PARTS = ("MathJax.js", "config", "extensions", "jax/input", "jax/element", "jax/output/HTML-CSS", "fonts")
#: MathJax's query: its combined TeX config, then ours (written into config/local/ by `on_files`).
MATHJAX_QUERY = "?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/overparam"
#: The fonts this copy of MathJax ships (STIX-Web), no font menu, no loading messages.
MATHJAX_CONFIG = """MathJax.Hub.Config({
  "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web"},
  messageStyle: "none", showMathMenu: false
});
MathJax.Ajax.loadComplete("[MathJax]/config/local/overparam.js");
"""
NOTEBOOK_PAGE_LINK = re.compile(r'href="((?![a-z]+:)[^"#]+)\.md(#[^"]*)?"')
UNDESCRIBED_MARKER = "<!-- undescribed study sections -->"
SECTION_HEADING = re.compile(r"^## section: (\w+)$", re.M)
OPTIONS_MARKER = re.compile(r"<!-- options: ([\w-]+) -->")


def on_files(files, config):
    for part in MATHJAX_PARTS:
        root = MATHJAX / part
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            uri = "assets/mathjax/" + path.relative_to(MATHJAX).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    files.append(File.generated(config, "assets/mathjax/config/local/overparam.js", content=MATHJAX_CONFIG))
    return files


def on_post_page(output, page, config):
    """Load MathJax on pages with formulas (the tutorial's notebook page loads it itself).

    A notebook links to pages as page.md, which works in Jupyter; on the site they are page.html.
    """
    if page.file.src_uri.endswith(".ipynb"):
        output = NOTEBOOK_PAGE_LINK.sub(r'href="\1.html\2"', output)
    if 'class="arithmatex"' not in output or "assets/mathjax/MathJax.js" in output:
        return output
    url = get_relative_url("assets/mathjax/MathJax.js", page.file.url) + MATHJAX_QUERY
    return output.replace("</body>", f'<script src="{url}"></script>\n</body>', 1)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "cli.md":
        return OPTIONS_MARKER.sub(lambda match: options_table(match.group(1)), markdown)
    if page.file.src_uri == "reproducing.md":
        return study_sections(markdown)
    return markdown


def cli_commands() -> dict:
    """The click commands behind `overparam NAME`, by name."""
    import typer

    from overparam.cli import app

    return dict(typer.main.get_command(app).commands)


def options_table(name: str) -> str:
    import click

    commands = cli_commands()
    if name not in commands:
        raise PluginError(f"cli.md documents `overparam {name}`, which does not exist: "
                          f"the commands are {', '.join(commands)}")
    command = commands[name]
    context = click.Context(command, info_name=name)
    rows = []
    for param in command.params:
        if isinstance(param, click.Argument):
            usage, text = param.human_readable_name, getattr(param, "help", None) or ""
        else:
            record = param.get_help_record(context)
            if record is None:  # a hidden option
                continue
            usage, text = record
        rows.append(f"| `{usage}` | {_cell(text)} |")
    return "\n".join([f"`overparam {name}`: {_cell(command.help or '')}", "", "| argument or option | meaning |",
                      "|---|---|", *rows, ""])


def _cell(text: str) -> str:
    text = " ".join(text.split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("[", "\\["), ("]", "\\]"), ("*", "\\*"), ("_", "\\_"), ("<", "&lt;")):
        text = text.replace(char, escaped)
    return text


def study_sections(markdown: str) -> str:
    from overparam.study.registry import SECTIONS, module, section

    def title(key: str) -> str:
        return section(key).TITLE

    described = SECTION_HEADING.findall(markdown)
    stale = [key for key in described if key not in SECTIONS]
    if stale:
        raise PluginError(f"reproducing.md describes study sections {stale} that do not exist: "
                          f"the sections are {', '.join(SECTIONS)}")
    markdown = SECTION_HEADING.sub(lambda match: f"## {title(match.group(1))} {{#{match.group(1)}}}", markdown)
    generated = "".join(f"## {title(key)} {{#{key}}}\n\n"
                        + (module(key).__doc__ or "").strip().replace("<", "&lt;")
                        + f"\n\nRun it alone with `overparam study --only {key}`.\n\n"
                        for key in SECTIONS if key not in described)
    if UNDESCRIBED_MARKER not in markdown:
        raise PluginError(f"reproducing.md needs the line {UNDESCRIBED_MARKER}: where undescribed sections go")
    return markdown.replace(UNDESCRIBED_MARKER, generated)
