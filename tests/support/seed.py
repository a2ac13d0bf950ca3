"""The seed's configuration, as its task module documents it."""

from __future__ import annotations

SEED = """
task:
  time_zone: "UTC"
  max_concurrent_tasks: 5
  debug: false
  log_task_execution: true

api:
  listen: "127.0.0.1:{port}"

tasks:
  - id: data_backup
    name: Daily Data Backup
    enabled: true
    schedule: "0 2 * * *"
    pipeline: backup_pipeline
    timeout: 30m
    retry_count: 3

pipelines:
  - name: backup_pipeline
    processors:
      - copy: {source: ./data, destination: ./backup}
      - compress: {path: ./backup, algorithm: gzip}
      - upload: {destination: ./remote/}
      - send_alert:
          condition: failure
          message: "Backup failed for {task.id}"
"""
