"""Stage package `ingest`: see pipeline/stages.py for the stage table."""
