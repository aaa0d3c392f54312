"""Live failure alerting: rules evaluated over the journal, alerts delivered by sinks.

``rules`` (the ``[[alerts]]`` config), ``engine`` (one more consumer of the journal that
turns matching entries into alert documents, committed together with its offset and its
rule state), ``context`` (run details, fetched when entries were projected without the
run), ``messages`` (the alert document and its templates) and ``destination`` (what the
Slack, Discord and PagerDuty sinks share). Nothing is imported here, so the config model
can import ``rules`` without pulling in the engine.
"""
