"""Evaluation the HEAR way: tasks, embedding cache, downstream training, metrics, reports."""

from . import probes  # noqa: F401  (registration: the built-in probes, before any protocol names one)
