"""Stage package `networks`: see pipeline/stages.py for the stage table."""
