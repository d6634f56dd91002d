"""Stand-in for upstream's `models/helpers.py`: the in-place top-k/top-p sampler."""
from ssg_core.sampling import sample_with_top_k_top_p_  # noqa: F401  (the same rule as upstream's)
