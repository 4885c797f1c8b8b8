"""What makes two embeddings "the same": the one rule that ``hearfuse embed``'s resume, the reader
(:func:`hearfuse.open_embeddings`), ``hearfuse export`` and the evaluation cache all apply.

Embeddings are the same when they were made from the same config (its numeric content, the
fingerprint), in the same compute precision, by the same version of the embedding code, and stored in
the same precision with the kinds asked for. Each part that differs is said in words, one reason per
cause, so a rerun tells why it embeds again.

Importing it does not import torch: readers of an output folder need it too.
"""

from __future__ import annotations

import dataclasses

#: The version of the code that computes embedding values (upstream families, fusion, the model, audio
#: decoding and resampling). Bump it with every change that can change an embedding's numbers, and with
#: no other: a comment or a refactor leaves it alone, so hours of cached embeddings stay valid.
#: ``tests/test_embedding_version.py`` pins reference outputs of every family and fusion step under this
#: version, so a change to the numbers without a bump fails there.
EMBEDDING_VERSION = 1

#: The version read for records written before versions were recorded (hearfuse 0.1.0 before 2026-12-07).
UNVERSIONED = 0


#: The parts of an identity that must be equal, in words as every message about a change names them (the
#: kinds need only cover those wanted).
PARTS = {
    "config": "the model config's numeric content",
    "dtype": "the dtype",
    "code": "the embedding code version",
    "store_dtype": "the store dtype",
}


def change(part: str, before, after) -> str:
    """``the dtype (float32 -> bfloat16) changed``: one cause of embedding again, in words."""
    detail = "" if part == "config" else f" ({before} -> {after})"
    return f"{PARTS[part]}{detail} changed"


@dataclasses.dataclass(frozen=True)
class EmbeddingIdentity:
    """How a set of embeddings was made and stored."""

    config: str | None  # FusionConfig.fingerprint()
    dtype: str = "float32"  # compute precision
    code: int = EMBEDDING_VERSION  # EMBEDDING_VERSION of the code that made them
    store_dtype: str = "float32"  # precision the arrays are stored in
    kinds: tuple[str, ...] = ("scene", "timestamp")  # sorted

    def __post_init__(self):
        object.__setattr__(self, "kinds", tuple(sorted(self.kinds)))

    @property
    def way(self) -> EmbeddingIdentity:
        """How the embeddings were made and stored, kinds aside: what a reader keeps apart (a folder may
        hold ``--kind`` runs of one way)."""
        return dataclasses.replace(self, kinds=())

    def why_not_reusable_for(self, wanted: EmbeddingIdentity, *, any_code: bool = False) -> list[str]:
        """Why stored embeddings of this identity cannot stand in for ``wanted`` (empty: they can): each
        part that differs, and the kinds wanted that they lack. ``any_code``: another code version is
        accepted (``hearfuse embed --reuse-other-code``)."""
        reasons = [
            change(part, getattr(self, part), getattr(wanted, part))
            for part in PARTS
            if getattr(self, part) != getattr(wanted, part) and not (part == "code" and any_code)
        ]
        missing = sorted(set(wanted.kinds) - set(self.kinds))
        if missing:
            reasons.append(f"the {' and '.join(missing)} embeddings were not written")
        return reasons

    def describe(self) -> str:
        """``8f5160ad44ddc97a, float32, code v1, stored float16``: for messages naming identities."""
        stored = "" if self.store_dtype == "float32" else f", stored {self.store_dtype}"
        return f"{self.config}, {self.dtype}, code v{self.code}{stored}"

    def cache_key(self) -> dict:
        """The evaluation cache's key: how the rows were made (the cache stores float32 rows of one kind)."""
        return {"config": self.config, "dtype": self.dtype, "embedding_code": self.code}
