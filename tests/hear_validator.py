"""HEAR 2021's own validator (``hearvalidator``), run on a hearfuse model.

hearvalidator imports TensorFlow at the top of its module but uses it only for TensorFlow models; a torch
model goes through its torch checks alone. TensorFlow is not installed here (its metadata would pull a
second numpy and protobuf), so a stand-in module with the one name the torch path touches
(``tf.Module``, for an ``isinstance`` test) lets the validator's real code run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import sys
import types
from pathlib import Path

import pytest


def validate(model_file_path: str | Path) -> str:
    """Run ``hearvalidator`` on ``hearfuse.load_model(model_file_path)``; returns what it printed.
    Raises hearvalidator's ``ModelError`` where a check fails."""
    validate_module = _import_validator()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        validate_module.ValidateModel("hearfuse", str(model_file_path), device="cpu")()
    return printed.getvalue()


def _import_validator():
    """``hearvalidator.validate``, with the stand-in TensorFlow in ``sys.modules`` only while it is imported
    (left there, it would answer other libraries' probes for TensorFlow)."""
    if "hearvalidator.validate" in sys.modules:
        return sys.modules["hearvalidator.validate"]
    pytest.importorskip("hearvalidator", reason="make install adds hearvalidator")
    if importlib.util.find_spec("tensorflow") is not None:
        return importlib.import_module("hearvalidator.validate")
    stand_in = types.ModuleType("tensorflow")
    stand_in.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
    stand_in.Module = type("Module", (), {})  # nothing hearfuse returns is one
    sys.modules["tensorflow"] = stand_in
    try:
        return importlib.import_module("hearvalidator.validate")
    finally:
        del sys.modules["tensorflow"]
