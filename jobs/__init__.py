"""Jobs: the queue, the batching loop and the workers. Bots talk to a `JobBackend`."""

from .api import ComposeRequest, JobBackend, JobEvent, Refused

__all__ = ["ComposeRequest", "JobBackend", "JobEvent", "Refused"]
