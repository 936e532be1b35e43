"""semwatch: semantic anomaly detection for LLM and agent telemetry."""
__version__ = "0.1.0"
