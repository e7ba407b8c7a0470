"""The one family of errors the core raises for problems an artist can act on."""


class AvatarError(Exception):
    """A problem with the user's input or files, worded so the user knows what to do.

    Operators and the CLI catch this type and show its message without a traceback; any other
    exception is a bug and keeps its traceback.
    """


class AvatarFileError(AvatarError):
    """A file that cannot be read: malformed, truncated, too large or of the wrong kind."""


class AvatarWriteError(AvatarError):
    """A file that cannot be written (nothing partial is left behind)."""


class BodyModelError(AvatarError):
    """A body model that is missing, unreadable or not installed."""


class PoseError(AvatarError):
    """A pose or expression that names unknown joints or shapes, or has the wrong size."""


class LightingError(AvatarError):
    """A light or a lighting file that cannot be used, with what to change."""
