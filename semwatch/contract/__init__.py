"""The shared contract: what producers send, what semwatch emits, and how it is redacted.

This package imports nothing else of semwatch; everything else may import it.
"""

from semwatch.contract.events import RunEvent, ToolCall, describe_validation_error
from semwatch.contract.incidents import (
                                         BUILTIN_KINDS,
                                         KIND_PATTERN,
                                         SEVERITIES,
                                         Containment,
                                         Incident,
                                         Severity,
                                         SuspectedChange,
                                         dedup_key_for,
                                         incident_id_for,
)
from semwatch.contract.labels import LabelledWindow, is_optional
from semwatch.contract.redact import redact
from semwatch.contract.times import format_ts, parse_ts

__all__ = ["RunEvent", "ToolCall", "describe_validation_error", "BUILTIN_KINDS", "KIND_PATTERN",
           "SEVERITIES", "Containment", "Incident", "Severity", "SuspectedChange", "dedup_key_for", "incident_id_for",
           "LabelledWindow", "is_optional", "redact", "format_ts", "parse_ts"]
