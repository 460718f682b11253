"""Stage package `airflow`: see pipeline/stages.py for the stage table."""
