"""The built-in probes, each registered by name in :data:`~hearfuse.evaluation.protocol.PROBES`: ``mlp``
(the kit's), ``linear`` and ``knn`` (the fast probes of newer benchmarks such as X-ARES, which can rank
representations differently). Importing them imports no torch: each imports its solver when it fits."""

# isort: off
from . import mlp, linear, knn  # noqa: F401  (registration, in the order reports show their tables)
# isort: on
