"""gpupool: a shared compute allocation scheduler for public AI compute platforms."""

__version__ = "0.1.0"
