"""Broker export files read into the same fills a sync imports (docs/file-import.md)."""
