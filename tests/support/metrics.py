"""The tasks the metrics tests run, and the exposition read back with Prometheus' own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

TASKS = """
- {id: ok, pipeline: fine, schedule: '0 3 * * *'}
- {id: bad, pipeline: broken}
- {id: slow, pipeline: slow}
"""

PIPELINES = """
- {name: fine, processors: [{log: {message: fine}}]}
- {name: broken, processors: [{copy: {source: ./no-such-source, destination: ./copied}}]}
- {name: slow, processors: [{sleep: {duration: 30s}}]}
"""


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], as Prometheus reads the exposition."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for found, v in samples.get(name, []) if all(found.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]
