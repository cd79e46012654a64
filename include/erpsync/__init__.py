"""erpsync: an Apache Airflow 3 DAG pack that keeps a professional-services firm's CRM, PSA and
ERP in step and turns approved time and expenses into invoice-ready batches.

This package is the library behind the thin DAG files in ``dags/``. Importing it is cheap: no
module here imports pandas, great_expectations or the sandbox at import time.
"""

__version__ = "0.1.0"
