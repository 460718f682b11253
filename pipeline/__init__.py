"""profile-audit: the pipeline stages, importable without Airflow.

Each stage is a plain function keyed by a run key, so the CLI, the Airflow DAGs and the
tests all call the same code, and reruns are idempotent.
"""

__version__ = "0.1.0"
