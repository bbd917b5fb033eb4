"""The audit log's tables under migration (scripts in ``hedui.audit:migrations``)."""

from hedui.core.migrations import Schema

AUDIT_SCHEMA = Schema(
    name="the audit log",
    location="hedui.audit:migrations",
    version_table="hedui_audit_version",
    baseline="audit_0001",
    baseline_columns={
        "log_entry": frozenset({"idx", "entry", "leaf_hash"}),
        "log_node": frozenset({"level", "idx", "hash"}),
        "log_state": frozenset({"id", "size"}),
        "log_search": frozenset({"idx", "applicant_token", "caller", "time_ms"}),
        "log_checkpoint": frozenset({"size", "note"}),
    },
)
