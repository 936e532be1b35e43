"""The detection engine and the machinery detectors share (docs/architecture.md)."""
