"""haha.discovery (see docs/design.md)."""
