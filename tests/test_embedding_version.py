"""The embedding code's version changes when the numbers do, and only then: every family's and fusion
step's outputs are pinned under ``hearfuse.identity.EMBEDDING_VERSION`` (tests/embedding_reference.py), so
a change to the numbers without a bump fails here, and a comment or a refactor leaves caches valid."""

from __future__ import annotations

import numpy as np

from hearfuse.identity import EMBEDDING_VERSION

from .embedding_reference import PINNED, reference_outputs, same

REPIN = "bump hearfuse.identity.EMBEDDING_VERSION and pin again: .venv/bin/python -m tests.embedding_reference"


def test_the_embeddings_are_those_pinned_under_this_version(tmp_path):
    with np.load(PINNED) as pinned:
        version = int(pinned["__version__"])
        expected = {name: pinned[name] for name in pinned.files if name != "__version__"}
    assert version == EMBEDDING_VERSION, f"pinned under version {version}, the code says {EMBEDDING_VERSION}: {REPIN}"
    now = reference_outputs(tmp_path)
    assert sorted(now) == sorted(expected), f"other outputs than those pinned: {REPIN}"
    changed = [name for name in now if not same(now[name], expected[name])]
    assert changed == [], f"the embeddings changed under version {EMBEDDING_VERSION} ({', '.join(changed)}): {REPIN}"


def test_the_comparison_sees_a_small_change_and_forgives_rounding():
    pinned = np.random.default_rng(0).standard_normal((75, 96)).astype(np.float32)
    assert same(pinned + np.float32(1e-6) * pinned, pinned)  # another CPU's summation order
    assert not same(pinned * np.float32(1.001), pinned)  # a change to the numbers
    assert not same(pinned[:-1], pinned)
