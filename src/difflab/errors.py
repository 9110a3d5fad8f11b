"""User-facing errors: one line that names the problem and the fix; the CLI exits 2 on them."""


class UserError(Exception):
    """Bad input from the user (file, flag, config value). The CLI prints `error: <msg>` and exits 2."""
