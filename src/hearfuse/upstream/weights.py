"""Where checkpoint weights come from: a local directory, the Hugging Face cache, or the hub.

Resolution order for a checkpoint reference ``ref``:

1. ``ref`` is an existing directory -> load it (``save_pretrained`` layout).
2. ``ref`` looks like a filesystem path but does not exist -> :class:`WeightsNotFoundError`.
3. ``ref`` is a hub id already in the local cache -> load it without touching the network.
4. Offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set) -> :class:`WeightsNotFoundError`.
5. The hub does not answer one quick request -> :class:`WeightsNotFoundError` at once (an air-gapped
   node would otherwise spend ~25 s in the hub client's retries before failing in several lines).
6. Otherwise download into the standard cache (``HF_HOME``), then load.
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


#: Seconds the hub has to answer before it counts as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0


def _how_to_provide(ref: str) -> str:
    return (
        f"fetch it where the network is with `hf download {ref}` (or `hearfuse download PRESET`) and copy that "
        "cache here (or point HF_HOME at it), or save the model with save_pretrained(DIR) and give DIR as the "
        "member's `checkpoint` in a fusion config"
    )


def _not_here(ref: str, why: str) -> WeightsNotFoundError:
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    return WeightsNotFoundError(
        f"checkpoint {ref!r} is not in the Hugging Face cache ({cache}) and {why}; {_how_to_provide(ref)}"
    )


def hub_unreachable() -> str | None:
    """Why the hub does not answer one request within HUB_PROBE_TIMEOUT_S (no retries), or None if it does."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # the HTTP client's connection errors come in many classes
        return f"the hub ({constants.ENDPOINT}) cannot be reached: {error or type(error).__name__}"
    return None


def is_cached(ref: str, file: str = "config.json") -> bool:
    """Whether ``ref``'s ``file`` (a directory or a hub id) can be read without the network."""
    if Path(ref).expanduser().is_dir():
        return (Path(ref).expanduser() / file).is_file()
    if looks_like_path(ref):
        return False
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref, file)
    return isinstance(found, str)


def load_pretrained(model_class: type[ModelT], ref: str) -> ModelT:
    """Load ``model_class`` weights from a directory, the local cache or the hub (see module doc)."""
    return _from_pretrained(model_class, ref, "config.json", "weights saved with save_pretrained")


def load_feature_extractor(ref: str):
    """The checkpoint's own feature extractor (``preprocessor_config.json``), found as its weights are."""
    from transformers import AutoFeatureExtractor

    return _from_pretrained(AutoFeatureExtractor, ref, "preprocessor_config.json", "its feature extractor's config")


def _from_pretrained(loader, ref: str, required: str, what: str):
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / required).is_file():
            raise WeightsNotFoundError(f"{ref!r} is not a checkpoint directory (expected {required} and {what})")
        return loader.from_pretrained(path)
    if looks_like_path(ref):
        raise WeightsNotFoundError(f"checkpoint directory {ref!r} does not exist; {_how_to_provide(ref)}")
    try:
        return loader.from_pretrained(ref, local_files_only=True)
    except OSError:
        pass
    _require_hub(ref)
    try:
        return loader.from_pretrained(ref)
    except Exception as error:  # the hub client raises many kinds of network errors
        raise _download_failed(ref, error) from error


def _require_hub(ref: str) -> None:
    if is_offline():
        raise _not_here(ref, "offline mode is on (HF_HUB_OFFLINE)")
    why = hub_unreachable()
    if why is not None:
        raise _not_here(ref, why)


def _download_failed(ref: str, error: Exception) -> WeightsNotFoundError:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return WeightsNotFoundError(
        f"could not download checkpoint {ref!r} ({type(error).__name__}: {first_line}); {_how_to_provide(ref)}"
    )


def download(ref: str) -> str:
    """Fetch a hub checkpoint into the standard cache and return its local directory."""
    if Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser())
    from huggingface_hub import snapshot_download

    _require_hub(ref)
    try:
        return snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"])
    except Exception as error:
        raise _download_failed(ref, error) from error
