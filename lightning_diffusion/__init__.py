"""lightning-diffusion: conditional diffusion models and guidance as PyTorch Lightning components."""

from lightning_diffusion.allocator import tune_malloc
from lightning_diffusion.registry import get_component, list_components, load_component, register
from lightning_diffusion.sampling import sample

__all__ = ["get_component", "list_components", "load_component", "register", "sample"]
__version__ = "0.1.0"

tune_malloc()
