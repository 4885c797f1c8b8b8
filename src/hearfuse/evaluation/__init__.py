"""Evaluation the HEAR way: tasks, embedding cache, downstream training, metrics, reports."""
