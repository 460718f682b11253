"""Stage package `networks`: see pipeline/stages/__init__.py for the stage table."""
