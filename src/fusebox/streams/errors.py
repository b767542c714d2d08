"""What the stream engine refuses, and why; the protocol layer turns these into HTTP."""

from __future__ import annotations


class StreamError(Exception):
    """A request the engine refuses. `message` is written for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(StreamError):
    pass


class StreamNotFound(StreamError):
    pass


class StreamGone(StreamError):
    """Soft-deleted (forks still read it) or read below retention."""


class ConfigurationConflict(StreamError):
    """A create that names an existing stream with another configuration."""


class ContentTypeConflict(StreamError):
    pass


class StreamClosed(StreamError):
    def __init__(self, message: str, next_position: int) -> None:
        super().__init__(message)
        self.next_position = next_position


class SequenceConflict(StreamError):
    """A Stream-Seq that does not sort after the last one."""


class StaleProducerEpoch(StreamError):
    def __init__(self, message: str, current_epoch: int) -> None:
        super().__init__(message)
        self.current_epoch = current_epoch


class ProducerSequenceGap(StreamError):
    def __init__(self, message: str, expected: int, received: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received
