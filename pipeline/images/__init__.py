"""Stage package `images`: see pipeline/stages.py for the stage table."""
