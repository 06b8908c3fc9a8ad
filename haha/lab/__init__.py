"""haha.lab (see docs/design.md)."""
