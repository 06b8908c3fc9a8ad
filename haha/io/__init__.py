"""haha.io (see docs/design.md)."""
