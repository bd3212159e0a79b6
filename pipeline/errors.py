"""Errors the job reports to its user as a message, not a traceback."""


class JobError(Exception):
    """A problem with the job as a whole (bad input URL, incompatible output, ...)."""


class SettingsError(JobError, ValueError):
    """A setting or argument the user gave that cannot work (a ValueError too, for
    callers of the library functions)."""


class InternalError(Exception):
    """An invariant of proxycomp itself failed: a bug here, not a problem with the
    input or the settings."""

    def __init__(self, what: str):
        super().__init__(f"{what} (an internal error: a bug in proxycomp, not in the input or settings; "
                         "please report it with the output of PROXYCOMP_DEBUG=1)")


class Drained(Exception):
    """The run stopped on SIGTERM after its in-flight shards committed (or the grace
    ran out); `summary` holds what it finished. Resubmitting the same command continues."""

    def __init__(self, summary):
        super().__init__("drained")
        self.summary = summary


class Interrupted(Exception):
    """The run was stopped (Ctrl-C); `summary` holds what it finished before that."""

    def __init__(self, summary):
        super().__init__("interrupted")
        self.summary = summary
