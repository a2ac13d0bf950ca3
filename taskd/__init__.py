"""taskd: a cron-scheduled task daemon with pipelines, retries, history and a REST API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("taskd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
