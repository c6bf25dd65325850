"""The guidance sweep: for each method row and scale, N samples, their metrics, one row of a table.

By job: ``settings`` (what a sweep runs, validated) resolved into ``plans`` (one per row), ``methods``
(what each kind of row needs and how it samples), ``roles`` (the models a sweep can combine with its
denoiser, one entry each), ``models`` (loading them, and their checks), ``reference`` (real-data features
and their cache), ``context`` (the real data, prompts and row logger a run is given), ``outputs``
(sweep.json / sweep.csv) and ``run`` (the loop).
"""

from lightning_diffusion.metrics import METRIC_KEYS
from lightning_diffusion.sweep.context import SweepContext
from lightning_diffusion.sweep.methods import SweepMethod, get_sweep_method, register_sweep_method
from lightning_diffusion.sweep.models import SweepModels, check_compatible, load_models
from lightning_diffusion.sweep.outputs import ROW_KEYS, read_rows, write_rows
from lightning_diffusion.sweep.plans import RowPlan
from lightning_diffusion.sweep.reference import reference_features, reference_key
from lightning_diffusion.sweep.roles import Role, get_role, register_role, registered_roles
from lightning_diffusion.sweep.run import run_sweep
from lightning_diffusion.sweep.settings import SweepSettings

__all__ = [
    "METRIC_KEYS",
    "ROW_KEYS",
    "Role",
    "RowPlan",
    "SweepContext",
    "SweepMethod",
    "SweepModels",
    "SweepSettings",
    "check_compatible",
    "get_role",
    "get_sweep_method",
    "load_models",
    "read_rows",
    "reference_features",
    "reference_key",
    "register_role",
    "register_sweep_method",
    "registered_roles",
    "run_sweep",
    "write_rows",
]
