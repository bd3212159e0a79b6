"""Errors the job reports to its user as a message, not a traceback."""


class JobError(Exception):
    """A problem with the job as a whole (bad input URL, incompatible output, ...)."""


class Interrupted(Exception):
    """The run was stopped (Ctrl-C); `summary` holds what it finished before that."""

    def __init__(self, summary):
        super().__init__("interrupted")
        self.summary = summary
