"""User-facing errors: one line that names the problem and the fix; the CLI exits 2 on them."""


class UserError(Exception):
    """Bad input from the user (file, flag, config value). The CLI prints `error: <msg>` and exits 2."""


class Stopped(Exception):
    """A long job stopped on a signal (SIGINT / SIGTERM, what schedulers send before pre-emption) after saving its work.
    The CLI prints the message (which says how to continue) and exits 128 + the signal number."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number
