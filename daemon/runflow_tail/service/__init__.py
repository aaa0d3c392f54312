"""The long-running service around the pipeline: ``daemon`` (supervision, reload,
readiness), ``http`` (/healthz, /readyz, /metrics), ``status`` (the operator's snapshot of
a state directory) and ``systemd`` (sd_notify)."""
