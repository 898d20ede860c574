"""conveyor: a Faktory-compatible job server, durable storage, and an asyncio worker library."""

from conveyor.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConveyorError,
    InvalidJob,
    JobNotFound,
    NotUnique,
    ProtocolError,
    StoreError,
)

__version__ = "0.1.0"

__all__ = [
    # errors
    "AuthenticationError",
    "CommandError",
    "ConnectError",
    "ConveyorError",
    "InvalidJob",
    "JobNotFound",
    "NotUnique",
    "ProtocolError",
    "StoreError",
    "__version__",
]
