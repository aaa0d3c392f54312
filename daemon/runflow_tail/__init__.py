"""runflow-tail: get Runflow run logs out of the Runflow API into the places people act on them.

The package's folders are its layers; every import points down this list::

    cli/        the command line (one module per command)
    service/    the daemon: supervision, reload, readiness, /healthz /readyz /metrics, systemd
    ingest/     API -> journal (pollers, backfill)     alerts/  journal -> alert documents
                postgres/  the state in PostgreSQL: its store, leases, the lease manager
    config/     the configuration model, its loading, its error messages
    delivery/   journal -> sinks (the loop every sink shares; replay)
    sinks/      one module per destination type, and the registry of types
    api/        the Runflow API client             journal/  the durable SQLite journal
    (base)      errors, times, pacing, models, filters, run_object, ownership, dotted,
                observability, metrics, version

Rules (``tests/base/test_layers.py`` reads every import and fails when one is broken):

- a module imports only from its own folder and from the layers below it; two folders
  on one line (``ingest`` and ``alerts``, ``api`` and ``journal``) never import each other;
- base modules import no folder;
- nothing outside ``cli/`` imports ``cli/``;
- ``sandbox/`` (the Runflow API simulator) stands apart: it imports only base modules,
  and only ``cli/`` imports it;
- imports sit at the top of a module: the only ones inside a function are the documented
  lazy loads (the sandbox's web stack, which only its commands need, and the optional
  extras: the otlp and s3 sinks' libraries, loaded when such a sink is built, and the
  ``postgres`` package with psycopg, loaded when the state is in PostgreSQL).

Plugin sinks need only what this module exports: ``Entry`` (what ``send`` receives),
``Sink``, ``SinkConfigBase`` and ``BatchSettings`` (their options), and the errors a sink
raises (``SinkRetryableError``: try again later; ``SinkRejectedError``: dead-letter it).
"""

from runflow_tail.errors import SinkRejectedError, SinkRetryableError
from runflow_tail.models import Entry
from runflow_tail.sinks.base import BatchSettings, Sink, SinkConfigBase
from runflow_tail.version import __version__

__all__ = [
    "BatchSettings",
    "Entry",
    "Sink",
    "SinkConfigBase",
    "SinkRejectedError",
    "SinkRetryableError",
    "__version__",
]
