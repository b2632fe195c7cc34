"""Hand-written SQL through aiosqlite: one module per table group."""
