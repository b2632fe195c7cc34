"""Settings: the environment (`config`) and the run-time system settings (`system`)."""
