"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """A foreseeable mistake (bad path, bad URL, unreachable database) with a hint what to do."""
