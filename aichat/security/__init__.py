"""Secrets, passwords, tokens and API-key encryption."""
