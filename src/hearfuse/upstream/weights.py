"""Where checkpoint weights come from: a local directory, the Hugging Face cache, or the hub.

Resolution order for a checkpoint reference ``ref``:

1. ``ref`` is an existing directory -> load it (``save_pretrained`` layout).
2. ``ref`` looks like a filesystem path but does not exist -> :class:`WeightsNotFoundError`.
3. ``ref`` is a hub id already in the local cache -> load it without touching the network.
4. Offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set) -> :class:`WeightsNotFoundError`.
5. Otherwise download into the standard cache (``HF_HOME``), then load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ModelT = TypeVar("ModelT", bound="PreTrainedModel")

_TRUTHY = {"1", "true", "yes", "on"}


class WeightsNotFoundError(UsageError, FileNotFoundError):
    """The weights of a checkpoint are not available here."""


def is_offline() -> bool:
    """True when the user asked Hugging Face libraries not to use the network."""
    return any(os.environ.get(var, "").lower() in _TRUTHY for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def looks_like_path(ref: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a path."""
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref or ref.endswith(".json")


def _how_to_provide(ref: str) -> str:
    return (
        f"Provide the weights of {ref!r} in one of these ways: run `hearfuse download` with a preset that uses it "
        f"(or `huggingface-cli download {ref}`) on a machine with network access and copy the cache "
        "(HF_HOME, default ~/.cache/huggingface) here; or save the model with `save_pretrained(DIR)` and put "
        "DIR as the member's `checkpoint` in a fusion config file."
    )


def is_cached(ref: str) -> bool:
    """Whether ``ref`` (a directory or a hub id) can be loaded without the network."""
    if Path(ref).expanduser().is_dir():
        return (Path(ref).expanduser() / "config.json").is_file()
    if looks_like_path(ref):
        return False
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref, "config.json")
    return isinstance(found, str)


def load_pretrained(model_class: type[ModelT], ref: str) -> ModelT:
    """Load ``model_class`` weights from a directory, the local cache or the hub (see module doc)."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise WeightsNotFoundError(
                f"{ref!r} is not a checkpoint directory (expected config.json and weights saved with save_pretrained)"
            )
        return model_class.from_pretrained(path)
    if looks_like_path(ref):
        raise WeightsNotFoundError(f"checkpoint directory {ref!r} does not exist. {_how_to_provide(ref)}")
    try:
        return model_class.from_pretrained(ref, local_files_only=True)
    except OSError:
        pass
    if is_offline():
        raise WeightsNotFoundError(
            f"checkpoint {ref!r} is not in the local Hugging Face cache and offline mode is on. {_how_to_provide(ref)}"
        )
    try:
        return model_class.from_pretrained(ref)
    except Exception as error:  # the hub client raises many kinds of network errors
        raise WeightsNotFoundError(
            f"could not download checkpoint {ref!r} ({type(error).__name__}: {error}). {_how_to_provide(ref)}"
        ) from error


def download(ref: str) -> str:
    """Fetch a hub checkpoint into the standard cache and return its local directory."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"])
    except Exception as error:
        raise WeightsNotFoundError(
            f"could not download checkpoint {ref!r} ({type(error).__name__}: {error}). {_how_to_provide(ref)}"
        ) from error
