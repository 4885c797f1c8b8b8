"""Every code block the documentation marks runnable runs as written (docs/contributing.md, "Runnable examples").

A page's runnable blocks run in order in one namespace, in a fresh folder holding a copy of ``examples/``; a
``toml`` block is written to the file its caption names. What a page needs first (an embedded folder, a tiny
local checkpoint in place of a hub id) is its entry in :data:`PREPARATIONS`; what the run must have produced
beyond the blocks' own asserts, its entry in :data:`CHECKS`.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: A MyST ``code-block`` directive: its language, its option lines, its body.
_CODE_BLOCK = re.compile(r"^```\{code-block\} (\w+)\n((?::[\w-]+:[^\n]*\n)*)\n?(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    language: str
    options: dict[str, str]
    code: str

    @property
    def runnable(self) -> bool:
        return "runnable" in self.options.get("class", "").split()


def code_blocks(page: Path) -> list[Block]:
    blocks = []
    for language, options, code in _CODE_BLOCK.findall(page.read_text()):
        parsed = dict(re.findall(r"^:([\w-]+):\s*(.*)$", options, re.M))
        blocks.append(Block(language, parsed, code))
    return blocks


def runnable_pages() -> list[str]:
    return sorted(
        str(page.relative_to(DOCS))
        for page in DOCS.rglob("*.md")
        if "_build" not in page.parts and any(block.runnable for block in code_blocks(page))
    )


# What a page needs before its blocks run: given the page's folder and the session's fixtures, it prepares the
# folder and returns text replacements for the blocks (a hub id -> a tiny local checkpoint).
Preparation = Callable[[Path, pytest.FixtureRequest], dict[str, str]]


def _tiny_wavlm(folder: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    return {"microsoft/wavlm-base-plus": str(request.getfixturevalue("tiny_checkpoints")["wavlm"])}


def _embedded_folder(folder: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """``emb/``: what ``hearfuse embed in/ --model examples/crepe_tiny.toml --store-dtype float16`` writes, one
    folder per class under ``in/``."""
    import hearfuse
    from hearfuse.collection.writer import embed_files

    for index, label in enumerate(["cat", "dog"] * 3):
        t = np.arange(8000 + 1600 * index) / 16000
        (folder / "in" / label).mkdir(parents=True, exist_ok=True)
        sf.write(folder / "in" / label / f"{index}.wav", 0.3 * np.sin(2 * np.pi * (200 + 300 * index) * t), 16000)
    model = hearfuse.load_model(str(folder / "examples" / "crepe_tiny.toml"))
    embed_files(model, [folder / "in"], folder / "emb", store_dtype="float16", progress=False)
    return {}


def _xares_installed(folder: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    pytest.importorskip("xares.audio_encoder_checker", reason="xares is not installed here; `make install` installs it")
    return {}


PREPARATIONS: dict[str, Preparation] = {
    "guide/fusion-configs.md": _tiny_wavlm,
    "guide/embeddings.md": _embedded_folder,
    "guide/xares.md": _xares_installed,
}


def _fusion_config_embeds(namespace: dict) -> None:
    import hearfuse
    from hearfuse.upstream import families

    from .conftest import sine_batch

    model = namespace["model"]
    assert model.config.name == "wavlm_crepe" and "unispeech_sat" in families()
    embeddings, _ = hearfuse.get_timestamp_embeddings(sine_batch(1, 1.0), model)
    assert embeddings.shape == (1, 49, 2 * 32)


def _embeddings_read_back(namespace: dict) -> None:
    assert namespace["X"].shape == (6, 256) and namespace["X"].dtype.name == "float16"
    assert sorted(namespace["classifier"].classes_) == ["cat", "dog"]
    assert namespace["embeddings"].shape[1] == 256 and namespace["loss"].item() > 0


#: What a page's run must have produced, beyond its blocks' own asserts.
CHECKS: dict[str, Callable[[dict], None]] = {
    "guide/fusion-configs.md": _fusion_config_embeds,
    "guide/embeddings.md": _embeddings_read_back,
}


def test_the_documentation_has_runnable_examples_and_the_test_knows_their_pages():
    pages = runnable_pages()
    assert {"tutorial/add-a-family.md", "guide/fusion-configs.md", "guide/embeddings.md"} <= set(pages)
    assert set(PREPARATIONS) <= set(pages) and set(CHECKS) <= set(pages), "an entry for a page with no runnable block"
    for page in pages:
        for block in code_blocks(DOCS / page):
            if block.runnable:
                assert block.language in ("python", "toml"), f"{page}: runnable {block.language} blocks are not run"
                named = block.language == "python" or block.options.get("caption")
                assert named, f"{page}: a runnable toml block needs a caption (the file it is written to)"


@pytest.mark.parametrize("page", runnable_pages())
def test_runnable_blocks_run(page, tmp_path, monkeypatch, request):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    replacements = PREPARATIONS.get(page, lambda *_: {})(tmp_path, request)
    namespace: dict = {"__name__": f"docs_{Path(page).stem.replace('-', '_')}"}
    for number, block in enumerate(b for b in code_blocks(DOCS / page) if b.runnable):
        code = block.code
        for old, new in replacements.items():
            code = code.replace(old, new)
        if block.language == "toml":
            (tmp_path / block.options["caption"]).write_text(code)
        else:
            exec(compile(code, f"{page}, runnable block {number + 1}", "exec"), namespace)
    CHECKS.get(page, lambda _: None)(namespace)
