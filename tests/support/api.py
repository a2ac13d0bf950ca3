"""The tasks and pipelines the API tests run."""

from __future__ import annotations

TASKS = """
- {id: alpha, name: Alpha job, schedule: '0 3 * * *', pipeline: ok, time_zone: Europe/Berlin}
- {id: beta, pipeline: bad}
- {id: gamma, enabled: false, schedule: '@hourly', pipeline: ok}
"""

PIPELINES = """
- {name: ok, processors: [{log: {message: fine}}]}
- {name: bad, processors: [{copy: {source: ./no-such-source, destination: ./copied}}]}
"""
