"""The tasks and pipelines the OpenAPI tests describe."""

from __future__ import annotations

TASKS = """
- {id: alpha, name: Alpha job, schedule: '0 3 * * *', pipeline: ok, spread: 5m}
- {id: beta, pipeline: bad}
- {id: gamma, pipeline: ok, after: {tasks: [alpha, beta], when: always, mode: any}}
"""

PIPELINES = """
- {name: ok, processors: [{log: {message: fine}}]}
- {name: bad, processors: [{shell: {command: 'exit 2'}}]}
"""
