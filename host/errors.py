"""User errors: the CLI prints them as one line and exits with code 2. Anything else is a bug."""


class UserError(Exception):
    """Base of every error caused by the user's input (bad path, wrong table, unreachable budget...)."""


class DatasetError(UserError):
    """A dataset is missing, incomplete or unknown."""


class TableError(UserError):
    """A latency table is unreadable, malformed, or built for something else than asked."""


class CheckpointError(UserError):
    """A checkpoint is unreadable or does not match the requested architecture."""


class BudgetError(UserError):
    """A latency budget the table cannot reach."""


class DeviceError(UserError):
    """A device spec is malformed or the device side failed."""
