"""The lab's one error type: its message says what was wrong and what to do."""


class LabError(RuntimeError):
    """A lab step could not be done; the message is meant for the person at the terminal."""
