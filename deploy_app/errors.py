"""The one error type the application reports to its user: bad input, not a bug."""


class FusionInputError(Exception):
    """Input that the application refuses: the message names the file or series and the problem.

    Messages never carry patient names or IDs: they go to logs that leave the hospital's control.
    """
