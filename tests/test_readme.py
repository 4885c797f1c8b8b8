"""The README's examples run as written, and its presets table is the catalogue's. (The examples of the
documentation under docs/ run in tests/test_docs_examples.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = (Path(__file__).parents[1] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quickstart_crepe_shapes():
    snippet = _blocks("python")[0].split('\n\nmodel = hearfuse.load_model("fusion_cat_xwc"')[0]
    namespace: dict = {}
    exec(snippet, namespace)
    assert tuple(namespace["embeddings"].shape) == (2, 61, 2048)
    assert tuple(namespace["scene"].shape) == (2, 2048)
    assert namespace["timestamps"].dtype == torch.float32
    each = [tuple(clip.timestamp_embeddings.shape) for clip in namespace["each"]]
    assert each == [(21, 2048), (81, 2048), (41, 2048)]


def test_the_presets_table_is_the_catalogues():
    """The README's table of presets is what the documentation builds from the catalogue."""
    from hearfuse.cli.models import presets_markdown_table

    (in_readme,) = re.findall(r"<!-- presets-table -->\n(.*?)\n<!-- /presets-table -->", README, flags=re.S)
    assert in_readme == presets_markdown_table()
    assert in_readme.count("\n| `") == 12 and "`fusion_cat_xwc`" in in_readme


def test_the_readme_links_only_to_pages_that_exist():
    root = Path(__file__).parents[1]
    links = re.findall(r"\]\(((?:docs/)[^)#]+)", README)
    assert len(links) >= 15
    for link in links:
        assert (root / link).is_file(), link
