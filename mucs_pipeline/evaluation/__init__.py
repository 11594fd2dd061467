"""The leave-k-out evaluation: its protocol (top-k, removal, result rows), similarity
metrics, statistics, tables, figures and the report."""
