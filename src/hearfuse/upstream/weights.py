"""Where checkpoint weights come from: a local directory, the Hugging Face cache, or the hub.

Resolution order for a checkpoint reference ``ref``:

1. ``ref`` is an existing directory -> load it (``save_pretrained`` layout).
2. ``ref`` looks like a filesystem path but does not exist -> :class:`WeightsNotFoundError`.
3. ``ref`` is a hub id already in the local cache -> load it without touching the network.
4. Offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set) -> :class:`WeightsNotFoundError`.
5. The hub does not answer one quick request -> :class:`WeightsNotFoundError` at once (an air-gapped
   node would otherwise spend ~25 s in the hub client's retries before failing in several lines).
6. Otherwise download into the standard cache (``HF_HOME``), then load.

Before any weights are loaded, the checkpoint's files are checked (:func:`check_checkpoint`): a checkpoint of
another model type, or a config or weights file that is cut short, is a :class:`~hearfuse.errors.ConfigError`
naming the checkpoint and what is expected. `transformers` would otherwise fail deep inside, or worse, load
what it can into the wrong model and initialise the rest at random, with a warning easily lost.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import ConfigError, UsageError

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

    def check(directory: Path, complete: bool) -> None:
        check_checkpoint(directory, ref, model_class.config_class.model_type, complete=complete)

    return _from_pretrained(model_class, ref, "config.json", "weights saved with save_pretrained", check)


def load_feature_extractor(ref: str):
    """The checkpoint's own feature extractor (``preprocessor_config.json``), found as its weights are."""
    from transformers import AutoFeatureExtractor

    def check(directory: Path, complete: bool) -> None:
        read_checkpoint_json(directory / "preprocessor_config.json", ref)

    return _from_pretrained(
        AutoFeatureExtractor, ref, "preprocessor_config.json", "its feature extractor's config", check
    )


def _from_pretrained(loader, ref: str, required: str, what: str, check: Callable[[Path, bool], None]):
    """``check(directory, complete)`` runs on the files before anything is loaded; ``complete`` is False for a
    cache snapshot, which may hold only some files (the rest are then downloaded)."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / required).is_file():
            raise WeightsNotFoundError(f"{ref!r} is not a checkpoint directory (expected {required} and {what})")
        check(path, True)
        return loader.from_pretrained(path)
    if looks_like_path(ref):
        raise WeightsNotFoundError(f"checkpoint directory {ref!r} does not exist; {_how_to_provide(ref)}")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(ref, required)
    if isinstance(cached, str):
        check(Path(cached).parent, False)
        try:
            return loader.from_pretrained(ref, local_files_only=True)
        except OSError:  # cached in part: the rest is downloaded
            pass
    _require_hub(ref)
    try:
        check(Path(hf_hub_download(ref, required)).parent, False)
        return loader.from_pretrained(ref)
    except UsageError:
        raise
    except Exception as error:  # the hub client raises many kinds of network errors
        raise _download_failed(ref, error) from error


#: The weights files `transformers` loads, in the order it prefers them (``-00001-of-00002`` for shards).
WEIGHTS_FILES = ("model*.safetensors", "pytorch_model*.bin")


def check_checkpoint(directory: Path, ref: str, model_type: str, *, complete: bool = True) -> None:
    """Refuse, in one line, checkpoint ``ref`` (its files in ``directory``) when its config says it holds
    another model than ``model_type``, or a config or weights file there cannot be read whole; with
    ``complete``, also when it holds no weights."""
    config = read_checkpoint_json(directory / "config.json", ref)
    found = config.get("model_type")
    if found and found != model_type:
        raise ConfigError(
            f"checkpoint {ref!r} holds a model of type {found!r} (its config.json's model_type); this family "
            f"loads type {model_type!r}"
        )
    if (directory / "preprocessor_config.json").is_file():
        read_checkpoint_json(directory / "preprocessor_config.json", ref)
    files: list[Path] = []
    for pattern in WEIGHTS_FILES:
        files = files or sorted(directory.glob(pattern))
    if complete and not files:
        raise WeightsNotFoundError(
            f"checkpoint {ref!r} holds no weights (expected model.safetensors or pytorch_model.bin beside its "
            "config.json, as save_pretrained writes them)"
        )
    for file in files:
        problem = _safetensors_problem(file) if file.suffix == ".safetensors" else _torch_zip_problem(file)
        if problem:
            raise ConfigError(f"checkpoint {ref!r}: {file.name} {problem}; copy or download it again")


def read_checkpoint_json(path: Path, ref: str) -> dict:
    """A checkpoint's JSON config file as a dict; one that is cut short or not JSON is a ConfigError."""
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"checkpoint {ref!r}: {path.name} is not valid JSON (cut short?): {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"checkpoint {ref!r}: {path.name} must hold a JSON object")
    return data


def _safetensors_problem(path: Path) -> str | None:
    """What keeps a safetensors file from being read whole, from its header alone: 8 bytes of header length,
    the JSON header, then the tensors, the last ending where the file must."""
    size = path.stat().st_size
    with path.open("rb") as file:
        length = int.from_bytes(file.read(8), "little")
        if size < 8 or 8 + length > size:
            return f"is cut short or not a safetensors file ({size} bytes, fewer than its header alone)"
        try:
            header = json.loads(file.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError):
            return "is not a safetensors file (its header cannot be read)"
    if 8 + length + end > size:
        return f"is cut short ({size} bytes of {8 + length + end})"
    return None


def _torch_zip_problem(path: Path) -> str | None:
    """A ``torch.save`` file is a zip archive whose directory is at its end, so a file cut short has none.
    (A legacy pickle, from before PyTorch 1.6, cannot be checked without loading it.)"""
    with path.open("rb") as file:
        if file.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path):
            return None
    except zipfile.BadZipFile:
        return f"is cut short ({path.stat().st_size} bytes and no zip directory at its end)"


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
