"""Every feature class, once, in the order their middleware runs (the first is outermost).

Adding a feature: write ``manager/features/<feature>.py`` with a ``Feature`` subclass, list it
here, and document its tables in docs/configuration.md (docs/design/layout.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.manager.features.aggregation import AggregateFeature
from conveyor.manager.features.base import Feature
from conveyor.manager.features.cancellation import CancelFeature
from conveyor.manager.features.cron import CronFeature
from conveyor.manager.features.results import ResultsFeature

__all__ = ["FEATURES", "FEATURE_TABLES", "build_features"]

FEATURES: tuple[type[Feature], ...] = (
    CronFeature,
    CancelFeature,
    ResultsFeature,
    AggregateFeature,  # last: a job is grouped once every other push hook has accepted it
)

FEATURE_TABLES: frozenset[str] = frozenset(table for f in FEATURES for table in f.tables)
"""The top-level TOML tables the features read; the config loader accepts these."""


def build_features(tables: Mapping[str, Any]) -> list[Feature]:
    """One instance of every feature, configured from the TOML ``tables`` it reads. Raises
    ``ConfigError`` for a bad value."""
    return [
        feature.from_config({name: tables[name] for name in feature.tables if name in tables})
        for feature in FEATURES
    ]
