"""Stage package `reporting`: see pipeline/stages.py for the stage table."""
