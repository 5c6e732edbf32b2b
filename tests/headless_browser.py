"""Headless Chromium for the tests that render a page (the study report, the documentation site).

`render` loads a copy of the page with `observer(report_js)` in its head: it records every failed
resource and console.error, and when the page is done `report_js` (a JavaScript expression giving an
object) is written into document.title, which Chromium's --dump-dom shows.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

OBSERVER = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var target = e.target || {};
  window.__problems.push('error: ' + (e.message || target.src || target.href || 'resource'));
}, true);
var __consoleError = console.error;
console.error = function () { window.__problems.push('console.error: ' + Array.from(arguments).join(' ')); };
function __report() {
  var result = REPORT;
  result.problems = window.__problems;
  document.title = 'RESULT:' + JSON.stringify(result);
}
window.addEventListener('load', function () { WHEN_LOADED; });
</script>"""


def chromium() -> str:
    """The browser's path; skips the test where none is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("Chromium is not installed here (.ci/run installs Debian's chromium package)")
    return browser


def render(page: Path, report: str, profile: Path, url: str | None = None,
           when_loaded: str = "__report()", budget_ms: int = 10000, harmless: str | None = None) -> dict:
    """Load `page` (from `url`, its folder's address, where given, else from disk) with the observer;
    return its report. Browser console messages fail the test, except those matching `harmless`.

    The copy is written beside the page as NAME.check.html, so its relative links still resolve.
    """
    check = page.with_name(page.stem + ".check.html")
    script = OBSERVER.replace("REPORT", report).replace("WHEN_LOADED", when_loaded)
    check.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + script, 1), encoding="utf-8")
    address = check.as_uri() if url is None else url.rstrip("/") + "/" + check.name
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
         "--dump-dom", address],
        capture_output=True, text=True, timeout=180)
    match = re.search(r"<title>RESULT:(.*?)</title>", result.stdout, re.S)
    assert match, f"{page.name} did not finish loading: {result.stderr[-2000:]}"
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and check.name in line
               and not (harmless and re.search(harmless, line))]
    assert console == [], console
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
