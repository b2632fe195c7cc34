"""The chat engine: context, rounds in parts (attempts, sink, recorders) and their registry."""
