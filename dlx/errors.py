"""User-facing errors: one line, exit code 2, nothing half-written."""


class DlxError(Exception):
    """A problem with the user's input (config, files, data). The CLI prints it on one line."""

    exit_code = 2


class DataError(DlxError):
    """A dataset file is missing, corrupt, or fails its checksum."""
