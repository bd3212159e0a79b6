"""Errors the job reports to its user as a message, not a traceback."""


class JobError(Exception):
    """A problem with the job as a whole (bad input URL, incompatible output, ...)."""
