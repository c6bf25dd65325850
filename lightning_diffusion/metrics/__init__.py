"""Sample-quality metrics and their feature extractors. Each metric of a sweep row is one registered class
(``metrics.registry``) in its own module, imported here so that it registers. ``METRIC_KEYS`` names the
metric columns of a sweep row in registration order, then ``non_finite``."""

# Each module registers its metric; the import order is the order of a row's columns.
# isort: off
from lightning_diffusion.metrics import fid, inception_score, precision_recall  # noqa: F401
from lightning_diffusion.metrics import density_coverage, vendi, outcomes  # noqa: F401
from lightning_diffusion.metrics import kid, fid_infinity, cmmd  # noqa: F401

# isort: on
from lightning_diffusion.metrics.clip_score import clip_scores
from lightning_diffusion.metrics.features import (
    FEATURES,
    EvaluatorFeatures,
    FeatureExtractor,
    FeatureInputs,
    InceptionFeatures,
    build_features,
)
from lightning_diffusion.metrics.registry import (
    METRICS,
    Column,
    RowMetric,
    TradeOff,
    column,
    columns,
    register_metric,
    trade_offs,
)
from lightning_diffusion.metrics.sample_metrics import NON_FINITE, SampleMetrics, metric_keys

METRIC_KEYS = metric_keys()

__all__ = [
    "FEATURES",
    "METRICS",
    "METRIC_KEYS",
    "NON_FINITE",
    "Column",
    "EvaluatorFeatures",
    "FeatureExtractor",
    "FeatureInputs",
    "InceptionFeatures",
    "RowMetric",
    "SampleMetrics",
    "TradeOff",
    "build_features",
    "clip_scores",
    "column",
    "columns",
    "register_metric",
    "trade_offs",
]
