"""Stage package `reporting`: see pipeline/stages/__init__.py for the stage table."""
