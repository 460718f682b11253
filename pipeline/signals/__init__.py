"""Stage package `signals`: see pipeline/stages.py for the stage table."""
