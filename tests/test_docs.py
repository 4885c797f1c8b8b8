"""The documentation builds with every warning an error, its checks catch what they claim to, and the built site
works in a real browser: headless Chromium (Debian's ``chromium``) on a server bound to 127.0.0.1."""

from __future__ import annotations

import html.parser
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import pytest

from . import processes

pytest.importorskip("sphinx", reason="the documentation tools are not installed (pip install 'hearfuse[docs]')")

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "docs" / "_build"
SITE = BUILD / "html"
#: The home page as Chromium draws it, kept as a build artefact.
SCREENSHOT = BUILD / "screenshot.png"


def sphinx_build(source: Path, out: Path, doctrees: Path) -> subprocess.CompletedProcess:
    """What ``make docs`` runs, from a fresh environment (-E) so that every page's warnings are seen."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", "-d", str(doctrees)]
    return processes.run([*command, str(source), str(out)], timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def built_site() -> Path:
    """The site, built once for this module into docs/_build/html (where ``make docs`` puts it)."""
    started = time.monotonic()
    result = sphinx_build(ROOT / "docs", SITE, BUILD / "doctrees")
    print(f"documentation built in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr[-5000:]
    return SITE


def test_the_documentation_builds_without_a_warning(built_site):
    pages = {path.relative_to(built_site).as_posix() for path in built_site.rglob("*.html")}
    expected = {"index.html", "getting-started.html", "tutorial/add-a-family.html", "api/hear.html"}
    guide = ("command-line", "presets", "evaluation", "plan", "real-models", "suites")
    expected |= {f"guide/{name}.html" for name in guide}
    expected |= {f"results/{name}.html" for name in ("performance", "suites", "heareval", "probes", "layers")}
    assert expected <= pages


def test_the_tables_from_the_code_are_in_the_pages(built_site):
    from hearfuse import catalogue
    from hearfuse.cli import COMMANDS

    presets = (built_site / "guide" / "presets.html").read_text()
    assert all(f'<span class="pre">{name}</span>' in presets for name in catalogue.names())
    real = (built_site / "guide" / "real-models.html").read_text()
    assert all(name in real for name in catalogue.real_models())
    options = (built_site / "guide" / "command-line.html").read_text()
    for command in COMMANDS:
        assert f"usage: hearfuse {command.__name__.rsplit('.', 1)[1]}" in options
    assert "--store-dtype" in options and "--write-config" in options
    assert "usage: hearfuse plan" in options and "--resamples" in options and "--baseline" in options
    assert "Writes RESULTS/&lt;model&gt;/&lt;task&gt;.json" in options, "a <placeholder> in help was read as HTML"
    api = (built_site / "api" / "evaluation.html").read_text()
    assert 'id="hearfuse.evaluation.uncertainty.compare"' in api and 'id="hearfuse.evaluation.plan.run_plan"' in api


def test_a_broken_reference_fails_the_build_and_a_reexported_name_links(tmp_path):
    """The checks are real: a name that exists nowhere is an error; ``hearfuse.load_model`` (re-exported) links
    to ``hearfuse.hear.load_model``'s documentation; an internal module is shown as code."""
    (tmp_path / "conf.py").write_text(
        f"__file__ = {str(ROOT / 'docs' / 'conf.py')!r}\nexec(open(__file__).read())\n"
        "html_theme = 'basic'\nhearfuse_every_command_shown = False\n"
    )
    (tmp_path / "index.md").write_text(
        "# Probe\n\n```{eval-rst}\n.. autofunction:: hearfuse.hear.load_model\n```\n\n"
        "See {py:func}`hearfuse.load_model`, {py:mod}`hearfuse.collection.layout` and "
        "{py:func}`hearfuse.hear.load_modle`.\n"
    )
    result = sphinx_build(tmp_path, tmp_path / "out", tmp_path / "doctrees")
    assert result.returncode != 0
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "hearfuse.hear.load_modle" in warnings[0], result.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert 'href="#hearfuse.hear.load_model"' in page


# The site in a browser.

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed: apt-get install -y --no-install-recommends chromium (make system-deps)",
)


@pytest.fixture(scope="module")
def served(built_site) -> str:
    """The built site on a free port of 127.0.0.1; the server is stopped by its PID afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(built_site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "index.html", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        processes.end_session(server.pid, grace=2.0)
        server.wait()


def chromium(*arguments: str, tmp: Path) -> str:
    """Headless Chromium with a profile of its own; the DOM after the page's scripts ran, when --dump-dom."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}"]
    result = processes.run([*command, "--virtual-time-budget=15000", *arguments], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@needs_chromium
def test_the_home_page_renders(served, tmp_path):
    dom = chromium("--dump-dom", served + "index.html", tmp=tmp_path)
    assert "<h1>hearfuse" in dom and "waveform" in dom and "General-purpose audio representations" in dom
    for page in ("getting-started.html", "guide/index.html", "tutorial/add-a-family.html", "api/index.html"):
        assert f'href="{page}"' in dom, page
    SCREENSHOT.unlink(missing_ok=True)
    chromium(f"--screenshot={SCREENSHOT}", "--window-size=1280,1000", served + "index.html", tmp=tmp_path)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 20_000


@needs_chromium
@pytest.mark.parametrize(
    "query, expected",
    [
        ("fusion_cat_xwc", 'href="guide/presets.html'),
        ("open_embeddings", 'href="api/collection.html#hearfuse.collection.reader.open_embeddings"'),
    ],
)
def test_the_search_page_finds(query, expected, served, tmp_path):
    dom = chromium("--dump-dom", f"{served}search.html?q={query}", tmp=tmp_path)
    results = dom[dom.index('id="search-results"') :]
    assert "Search finished" in results and expected in results, results[:3000]


@needs_chromium
def test_an_api_page_shows_a_signature(served, tmp_path):
    dom = chromium("--dump-dom", served + "api/hear.html", tmp=tmp_path)
    signature = dom[dom.index('id="hearfuse.hear.load_model"') :][:4000]
    assert "sig-name" in signature and "load_model" in signature
    assert "model_file_path" in signature and "device" in signature and "dtype" in signature


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src") or "")


@needs_chromium
def test_every_picture_loads(built_site, served, tmp_path):
    """Every <img> of every page that has one, as the browser's DOM holds it, is served, non-empty and a PNG
    with a size (or an SVG)."""
    pages = [
        p.relative_to(built_site).as_posix() for p in sorted(built_site.rglob("*.html")) if "<img" in p.read_text()
    ]
    assert len(pages) >= 2, pages
    checked = 0
    for page in pages:
        parser = _Images()
        parser.feed(chromium("--dump-dom", served + page, tmp=tmp_path))
        assert parser.sources, page
        for source in parser.sources:
            with urllib.request.urlopen(urljoin(served + page, source), timeout=10) as response:
                assert response.status == 200, (page, source)
                data = response.read()
            is_png = (
                data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20]) > 0 and int.from_bytes(data[20:24]) > 0
            )
            assert is_png or b"<svg" in data[:1000], (page, source, data[:20])
            checked += 1
    assert checked >= 3
