"""The guidance sweep: for each method row and scale, N samples, their metrics, one row of a table.

By job: ``settings`` (what a sweep runs, validated), ``methods`` (what each kind of row needs and how it
samples), ``models`` (the components and their checks), ``reference`` (real-data features and their
cache), ``outputs`` (sweep.json / sweep.csv) and ``run`` (the loop).
"""

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.sweep.methods import SweepMethod, get_sweep_method, register_sweep_method
from lightning_diffusion.sweep.models import SweepModels, check_compatible
from lightning_diffusion.sweep.outputs import ROW_KEYS, read_rows, write_rows
from lightning_diffusion.sweep.reference import reference_features, reference_key
from lightning_diffusion.sweep.run import run_sweep
from lightning_diffusion.sweep.settings import MethodRow, SweepSettings

__all__ = [
    "METRIC_KEYS",
    "ROW_KEYS",
    "MethodRow",
    "SweepMethod",
    "SweepModels",
    "SweepSettings",
    "check_compatible",
    "get_sweep_method",
    "read_rows",
    "reference_features",
    "reference_key",
    "register_sweep_method",
    "run_sweep",
    "write_rows",
]
