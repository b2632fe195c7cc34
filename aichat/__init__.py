"""aichat: a lightweight self-hosted AI chat backend."""

__version__ = "0.1.0"
