"""Sphinx configuration of hearfuse's documentation (``make docs``; contributors: docs/contributing.md)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent / "src"), str(DOCS / "_ext")]

import hearfuse  # noqa: E402

project = "hearfuse"
author = "the hearfuse authors"
copyright = "the hearfuse authors"
release = version = hearfuse.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_copybutton",
    "hearfuse_docs",  # tables generated from the code, and references to re-exported names
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown headings get anchors, so pages link to each other's sections: [text](page.md#a-heading).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# Every cross-reference must resolve (make docs runs with -W --keep-going). Names of other projects
# are not linked: the build reads no inventory from the network.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|np|scipy|transformers|pyarrow|datasets|ray|xares|soundfile|collections)(\..*)?"),
    ("py:.*", r"(Tensor|nn\.Module|Path|pathlib\..*|os\..*|typing\..*|argparse\..*|logging\..*|pickle)"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # torch's docstrings stay torch's (FusionModel.train)
autodoc_class_signature = "separated"

html_theme = "furo"
html_title = f"hearfuse {release}"
html_static_path: list[str] = []
html_last_updated_fmt = None
# The copy button leaves out prompts and the output lines of shell sessions.
copybutton_prompt_text = r"\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False
