"""haha.backends (see docs/design.md)."""
