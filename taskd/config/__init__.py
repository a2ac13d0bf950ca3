"""taskd.yml -> validated, immutable config objects, with errors that name file, line and key.

schema (pydantic sections) <- model (frozen objects, digests) <- build (pure validation) <- load
(files and globs); messages turns validation errors into sentences for all of them.
"""

from taskd.config.build import build_config
from taskd.config.load import load_config
from taskd.config.model import Config, PipelineConfig, ProcessorConfig, Source
from taskd.config.schema import (
    After,
    ApiSection,
    LogSection,
    MetricsSection,
    NodeSection,
    Placement,
    PlacementLabels,
    PlacementNodes,
    RetryPolicy,
    StoreSection,
    TaskConfig,
    TaskSection,
    parse_listen,
    thaw,
)

__all__ = [
    "After",
    "ApiSection",
    "Config",
    "LogSection",
    "MetricsSection",
    "NodeSection",
    "PipelineConfig",
    "Placement",
    "PlacementLabels",
    "PlacementNodes",
    "ProcessorConfig",
    "RetryPolicy",
    "Source",
    "StoreSection",
    "TaskConfig",
    "TaskSection",
    "build_config",
    "load_config",
    "parse_listen",
    "thaw",
]
