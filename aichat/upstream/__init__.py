"""Talking to model providers: the client and the URL policy its connections obey."""
