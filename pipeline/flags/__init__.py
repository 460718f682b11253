"""Stage package `flags`: see pipeline/stages.py for the stage table."""
