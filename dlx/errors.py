"""User-facing errors: one line, exit code 2, nothing half-written."""


class DlxError(Exception):
    """A problem with the user's input (config, files, data). The CLI prints it on one line."""

    exit_code = 2


class DataError(DlxError):
    """A dataset file is missing, corrupt, or fails its checksum."""


class Preempted(Exception):
    """The process got SIGTERM/SIGUSR1 (a Slurm preemption or time limit) while training; the
    last completed epoch's state is on disk. The CLI exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"signal {signum}")
        self.signum = signum
