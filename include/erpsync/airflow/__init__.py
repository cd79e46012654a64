"""Airflow-facing helpers of the pack: house defaults for DAGs, and small adapters between task
context and the library. Cheap to import: DAG files import this at parse time."""
