"""Fusion building blocks: aggregation, windowing, alignment, combination, pooling (pure tensor code)."""
