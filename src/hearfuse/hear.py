"""The HEAR API (``load_model``, ``get_timestamp_embeddings``, ``get_scene_embeddings``).

Deliberately thin, like the HEAR baselines: the work lives in :class:`~hearfuse.model.FusionModel`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from . import catalogue
from .config import FusionConfig
from .errors import UsageError
from .model import FusionModel


def resolve_config(model_file_path: str | Path | FusionConfig = "", **preset_options) -> FusionConfig:
    """A preset name, a real model's name (:func:`hearfuse.catalogue.real_models`), a ``.toml``/``.json``
    config path, or a config; ``""`` is the default preset."""
    if isinstance(model_file_path, FusionConfig):
        return model_file_path
    ref = str(model_file_path) or catalogue.DEFAULT_PRESET
    if ref in catalogue.PAPER_PRESETS:
        return catalogue.get(ref, **preset_options)
    real = catalogue.real_models().get(ref)
    if real is not None:
        if preset_options:
            raise UsageError(f"preset options {sorted(preset_options)} only apply to the paper's presets, not to {ref}")
        return real
    path = Path(ref).expanduser()
    if path.suffix in (".toml", ".json"):
        if preset_options:
            raise UsageError(f"preset options {sorted(preset_options)} only apply to presets, not to {ref}")
        if not path.is_file():
            raise UsageError(f"fusion config file {ref!r} does not exist")
        return FusionConfig.load(path)
    raise UsageError(
        f"{ref!r} is neither a preset ({', '.join(catalogue.names())}), a real model "
        f"({', '.join(catalogue.real_models())}) nor a .toml/.json config file"
    )


def load_model(
    model_file_path: str | Path | FusionConfig = "",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **preset_options,
) -> FusionModel:
    """Build a fused model from a preset name or a config file (HEAR's ``load_model``).

    ``dtype=torch.bfloat16`` runs the members under autocast; outputs stay float32. ``dtype="auto"`` picks
    bfloat16 on a GPU or CPU that runs it natively, float32 elsewhere (``model.autocast_dtype`` tells which);
    a CPU that would emulate the precision asked for is named in one logged line, once per process.
    ``preset_options`` (``normalize``, ``crepe_frames``) select a preset's alternatives.
    """
    return FusionModel.from_config(resolve_config(model_file_path, **preset_options), device=device, dtype=dtype)


def _check_model(model: object) -> FusionModel:
    if not isinstance(model, FusionModel):
        raise ValueError(f"model must be a hearfuse FusionModel from load_model(), got {type(model).__name__}")
    return model


def get_timestamp_embeddings(audio: Tensor, model: FusionModel) -> tuple[Tensor, Tensor]:
    """Embeddings ``(n_sounds, n_frames, D)`` and their timestamps in ms ``(n_sounds, n_frames)``."""
    return _check_model(model).timestamp_embeddings(audio)


def get_scene_embeddings(audio: Tensor, model: FusionModel) -> Tensor:
    """One embedding per sound, ``(n_sounds, scene_embedding_size)``."""
    return _check_model(model).scene_embeddings(audio)


def hear_functions(preset: str):
    """``load_model``, ``get_timestamp_embeddings``, ``get_scene_embeddings`` bound to ``preset``, so that each
    preset is an importable HEAR module (``hearfuse/presets/<name>.py``).

    ``load_model(model_file_path="")`` builds the preset; a non-empty path is taken as a config file
    instead, as HEAR runners may pass one.
    """

    def load_preset(model_file_path: str = "", **options):
        return load_model(model_file_path or preset, **options)

    load_preset.__name__ = load_preset.__qualname__ = "load_model"
    load_preset.__doc__ = f"Load the {preset!r} preset (HEAR API)."
    return load_preset, get_timestamp_embeddings, get_scene_embeddings
