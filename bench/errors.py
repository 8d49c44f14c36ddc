"""User-facing errors: the CLI prints their message as one line and exits with their status."""


class BenchError(Exception):
    """Bad input or configuration that the user can fix; never printed with a traceback."""

    exit_code = 2


class DataError(BenchError):
    """A dataset that cannot be loaded or trained on."""


class SpaceError(BenchError):
    """A search-space YAML file with a bad key, type or range."""


class ConfigError(BenchError):
    """A bad command-line or MLproject parameter."""
