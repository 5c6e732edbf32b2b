"""Griffe extension: docstrings write inner products as <w_r, x>, which Markdown would take for HTML tags.

Outside code spans, code blocks and math, every '<' that could open a tag is written as '&lt;', so
the API reference shows the docstring's text as `help()` does.
"""

from __future__ import annotations

import re

import griffe

#: Code spans and math are left as they are: `...`, $...$, \(...\), \[...\].
PROTECTED = re.compile(r"(`+).*?\1|\$[^$]+\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def escape_tags(text: str) -> str:
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            pieces, last = [], 0
            for match in PROTECTED.finditer(line):
                pieces += [TAG_START.sub("&lt;", line[last:match.start()]), match.group(0)]
                last = match.end()
            line = "".join(pieces) + TAG_START.sub("&lt;", line[last:])
        lines.append(line)
    return "\n".join(lines)


class EscapeTags(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = escape_tags(obj.docstring.value)
