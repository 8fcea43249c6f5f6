"""User-facing errors: the CLI prints them on one line and exits non-zero."""


class MetricSlamError(Exception):
    """A user mistake (missing file, bad calibration, wrong checkpoint...).

    The message must name the offending file or value and say how to fix it, on one line.
    """


class InputError(MetricSlamError):
    """Bad input data: unreadable or inconsistent files."""


class WeightsError(MetricSlamError):
    """Missing, corrupted or incompatible network weights."""
