"""The synthetic twin of the real shards: physics, priors, rendering, writing. NumPy and pyarrow."""
