"""Stage package `signals`: see pipeline/stages/__init__.py for the stage table."""
