"""CREPE's architecture as numbers: what its registry entry (:mod:`hearfuse.upstream.crepe`) and its
network (:mod:`hearfuse.upstream.crepe_net`) both need, kept below both so neither imports the other."""

#: Filter-count multiplier of each published capacity (filters = multiplier x [32, 4, 4, 4, 8, 16]).
CAPACITIES = {"tiny": 4, "small": 8, "medium": 16, "large": 24, "full": 32}
BASE_FILTERS = (32, 4, 4, 4, 8, 16)
#: Hidden states: the outputs of the first five blocks (conv, ReLU, batch norm, max-pool); the
#: last is the pool-5 embedding, so aggregation "last" is CREPE's published embedding. The sixth
#: block feeds only the pitch classifier and is not a state.
NUM_STATES = 5
#: Frames of a CREPE member whose options do not say otherwise: torchcrepe's hop, the first frame centred
#: on the clip's first sample.
DEFAULT_HOP_MS = 50.0
DEFAULT_FIRST_CENTER_MS = 0.0


def embedding_dim(capacity: str) -> int:
    """Size of the pool-5 embedding: channels of conv5 x 8 remaining time steps."""
    return CAPACITIES[capacity] * BASE_FILTERS[4] * 8
