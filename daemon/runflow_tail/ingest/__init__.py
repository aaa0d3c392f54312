"""Ingest: from the Runflow API into the journal. One ``poller`` per stream (its strategies
and cadence), ``backfill`` for a stream far behind, ``probe`` for what the API supports,
``stream_health`` for what status, readiness and metrics report."""
