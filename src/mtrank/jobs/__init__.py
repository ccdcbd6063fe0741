"""The jobs behind the entry points in src/: each validates its config, then composes the library."""
