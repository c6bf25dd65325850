"""Lightning callbacks of lightning-diffusion (EMA is Lightning's own ``EMAWeightAveraging``)."""

from callbacks.sample_grid import SampleGrid

__all__ = ["SampleGrid"]
