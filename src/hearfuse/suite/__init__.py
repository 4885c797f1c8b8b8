"""An offline benchmark suite from real instrument samples (FluidR3 GM) and synthetic speech (espeak-ng)."""
