"""Every feature class, once, in the order their middleware runs (the first is outermost).

Adding a feature: write ``manager/features/<feature>.py`` with a ``Feature`` subclass, list it
here, and document its tables in docs/configuration.md (docs/design/layout.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.manager.config import ManagerConfig
from conveyor.manager.features.aggregation import AggregateFeature
from conveyor.manager.features.backpressure import Backpressure
from conveyor.manager.features.base import Feature
from conveyor.manager.features.batches import BatchFeature
from conveyor.manager.features.cancellation import CancelFeature
from conveyor.manager.features.cron import CronFeature
from conveyor.manager.features.expiring import ExpiringJobs
from conveyor.manager.features.rate_limits import RateLimits
from conveyor.manager.features.results import ResultsFeature
from conveyor.manager.features.throttles import Throttles
from conveyor.manager.features.unique import UniqueJobs

__all__ = ["FEATURES", "FEATURE_TABLES", "build_features"]

FEATURES: tuple[type[Feature], ...] = (
    # expiry first: a job expired already is dropped before it takes a unique lock
    ExpiringJobs,
    UniqueJobs,
    Backpressure,
    Throttles,
    RateLimits,
    # after admission's hooks: a job refused there (NOTUNIQUE, expired) is never marked
    BatchFeature,
    CronFeature,
    CancelFeature,
    ResultsFeature,
    AggregateFeature,  # last: a job is grouped once every other push hook has accepted it
)

FEATURE_TABLES: frozenset[str] = frozenset(table for f in FEATURES for table in f.tables)
"""The top-level TOML tables the features read; the config loader accepts these."""


def build_features(tables: Mapping[str, Any], limits: ManagerConfig | None = None) -> list[Feature]:
    """One instance of every feature, configured from the TOML ``tables`` it reads and
    checked against the server's job ``limits`` (default: the defaults). Raises
    ``ConfigError`` for a bad value."""
    features = [
        feature.from_config({name: tables[name] for name in feature.tables if name in tables})
        for feature in FEATURES
    ]
    for feature in features:
        feature.check_limits(limits or ManagerConfig())
    return features
