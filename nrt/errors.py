"""Exceptions that separate the user's mistakes from the program's."""


class NrtError(Exception):
    """Base class of nrt's own errors."""


class InputError(NrtError, ValueError):
    """Bad input from the user: a file, a value or an option. The CLI exits with code 2."""


class ModelNotFoundError(NrtError):
    """A model that is neither on disk nor reachable on the hub."""


class BundleError(NrtError):
    """A bundle that is missing, incomplete, or written by another backbone or format."""


def listed(names: list[str], shown: int = 6) -> str:
    """The first ``shown`` names of a list for an error message, and how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
