"""haha.control (see docs/design.md)."""
