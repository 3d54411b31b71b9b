"""Errors that the CLI reports as one clear line (anything else is a bug and keeps its traceback)."""


class StrataError(Exception):
    """A problem the user can act on: bad settings, a busy port, a server that did not start."""


class ConfigError(StrataError):
    """A ``STRATA_*`` setting is missing or invalid."""


class NotReady(StrataError):
    """What a step reads is not there yet (run the pipeline first): retrying soon finds it
    missing again."""


class ServiceError(StrataError):
    """An embedded service could not be started, reached or stopped."""
