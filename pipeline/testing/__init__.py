"""Stage package `testing`: see pipeline/stages.py for the stage table."""
