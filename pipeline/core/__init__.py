"""Stage package `core`: see pipeline/stages.py for the stage table."""
