"""Stage package `scoring`: see pipeline/stages.py for the stage table."""
