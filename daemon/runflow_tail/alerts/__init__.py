"""Live failure alerting: rules evaluated over the journal, alerts delivered by sinks.

``engine`` (one more consumer of the journal that turns matching entries into alert
documents, committed together with its offset and its rule state), ``rules`` (the
``[[alerts]]`` rules of ``config.alerts``, compiled), ``context`` (run details, fetched
when entries were projected without the run), ``messages`` (the alert document and its
templates) and ``state`` (what the engine remembers between entries and restarts). The
destinations are sinks (``sinks.slack``, ``sinks.pagerduty``, ...).
"""
