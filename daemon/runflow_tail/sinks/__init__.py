"""Sinks: where entries go. One module per destination type; ``registry`` knows them all.

A sink does one thing (``send`` a batch, ``aclose``); batching, retries, offsets,
filtering and dead letters live once, in the delivery loop. Importing this package loads
no sink type and no plugin: ``registry`` does, when a configuration is loaded.
"""

from runflow_tail.sinks.base import BatchSettings, Sink, SinkConfigBase

__all__ = ["BatchSettings", "Sink", "SinkConfigBase"]
