"""runflow-tail's benchmark : the daemon against the sandbox on loopback.

``python -m bench`` (or ``python3 dev.py bench``) measures, in one run:

a. backlog drain: entries/s, API requests, bytes, CPU and peak RSS of ``runflow-tail run``,
   beside a bare fetch loop (the limit) and a naive poller on the same data, for projected
   entries and for whole entries with the ``run`` object, and its first and last quarter's
   pace;
a'. ceiling: the fetch limit's loop plus parsing, plus the journal, plus a page-level
   journal prototype, or plus a file without a journal: how far each step's work lets a
   drain go;
b. live latency: from visible in the API to written to the file;
c. idle cost: CPU of a caught-up daemon;
d. slow sink: peak RSS with a 200 ms webhook and a small and a 4x larger backlog;
e. latency-bound API: drain rate with 100 ms added per request;
f-i. each sink, a sparse backlog, a rate-limited API, the PostgreSQL state.

It prints a table with each target and writes ``bench/results/latest.json``.
``--quick`` is a seconds-long variant for CI; ``--profile`` also samples the projected
drain with py-spy (when installed) and summarises the daemon's hot spots.
"""
