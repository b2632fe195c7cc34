"""The chat engine: context, provider client, rounds and their registry."""
