"""What the server is doing, for Prometheus: `GET /metrics` (docs/operations.md §9)."""
