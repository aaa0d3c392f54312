"""The PostgreSQL store's statements, in one place (every value is a parameter).

Arrays go as binary parameters (``%b``): as text literals the server must parse them,
which measured twice as slow with five times the client CPU (README, "Running more than
one").
"""

from __future__ import annotations

ROW_OVERHEAD = 150
"""Bytes an entry takes beyond its raw bytes (tuple header, seq, stream, id, timestamp,
the two index entries): the journal's size is counted, not measured (schema.py)."""

ADD_ENTRIES = b"""
WITH incoming AS (
    SELECT u.stream, u.id, u.ts, u.raw, u.o
      FROM unnest(%(streams)b::text[], %(ids)b::text[], %(stamps)b::int8[], %(raws)b::bytea[])
           WITH ORDINALITY AS u(stream, id, ts, raw, o)
), fresh AS (
    -- re-reads are dropped here, before they are given a seq, so seqs stay dense and the
    -- in-memory tail of the journal stays usable (journal/recent.py)
    SELECT DISTINCT ON (i.stream, i.id) i.stream, i.id, i.ts, i.raw, i.o
      FROM incoming AS i
     WHERE NOT EXISTS (SELECT 1 FROM entries AS e WHERE e.stream = i.stream AND e.id = i.id)
     ORDER BY i.stream, i.id, i.o
), numbered AS (
    SELECT stream, id, ts, raw, row_number() OVER (ORDER BY o) AS n FROM fresh
), head AS (
    -- the row lock that makes commits follow seq order (schema.py)
    UPDATE journal_head SET last_seq = last_seq + (SELECT count(*) FROM numbered)
    RETURNING last_seq - (SELECT count(*) FROM numbered) AS previous
), added AS (
    INSERT INTO entries (seq, stream, id, ts, raw)
    SELECT head.previous + numbered.n, numbered.stream, numbered.id, numbered.ts, numbered.raw
      FROM numbered CROSS JOIN head
    ON CONFLICT DO NOTHING
    RETURNING seq, stream, id, octet_length(raw) AS size
), counted AS (
    INSERT INTO journal_stats AS s (stream, entries, bytes)
    SELECT stream, count(*), sum(size) FROM added GROUP BY stream
    ON CONFLICT (stream) DO UPDATE
       SET entries = s.entries + EXCLUDED.entries, bytes = s.bytes + EXCLUDED.bytes
), notified AS (
    -- delivered at commit: members whose sinks read these streams wake up at once
    SELECT pg_notify(%(channel)s, 'seq ' || max(seq)) FROM added HAVING count(*) > 0
)
SELECT head.previous, a.seqs, a.ids, (SELECT count(*) FROM notified)
  FROM head,
       (SELECT array_agg(seq ORDER BY seq) AS seqs, array_agg(id ORDER BY seq) AS ids
          FROM added) AS a
"""

FENCE = b"SELECT fence(%s, %s, %s)"

HEAD = b"SELECT last_seq FROM journal_head"

MAX_SEQ = b"SELECT coalesce((SELECT max(seq) FROM entries), (SELECT last_seq FROM journal_head))"

LOAD_CURSOR = b"""
SELECT fingerprint, watermark, floor, strategy, api_cursor, last_id, health_error,
       last_success_at, updated_at
  FROM cursors WHERE stream = %s
"""

LIST_CURSORS = b"""
SELECT stream, fingerprint, watermark, floor, strategy, api_cursor, last_id, health_error,
       last_success_at, updated_at
  FROM cursors ORDER BY stream
"""

SAVE_CURSOR = b"""
INSERT INTO cursors (stream, fingerprint, watermark, floor, strategy, api_cursor, last_id,
                     health_error, last_success_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (stream) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint, watermark = EXCLUDED.watermark,
    floor = EXCLUDED.floor, strategy = EXCLUDED.strategy, api_cursor = EXCLUDED.api_cursor,
    last_id = EXCLUDED.last_id, health_error = EXCLUDED.health_error,
    last_success_at = EXCLUDED.last_success_at, updated_at = EXCLUDED.updated_at
"""

SAVE_HEALTH = b"""
INSERT INTO cursors (stream, fingerprint, watermark, floor, strategy, api_cursor, last_id,
                     health_error, last_success_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (stream) DO UPDATE SET
    health_error = EXCLUDED.health_error, last_success_at = EXCLUDED.last_success_at,
    updated_at = EXCLUDED.updated_at
"""

OFFSETS = b'SELECT sink, "offset" FROM sink_offsets'

ENSURE_OFFSETS = b"""
INSERT INTO sink_offsets (sink, "offset", updated_at)
SELECT sink, (SELECT coalesce((SELECT max(seq) FROM entries),
                              (SELECT last_seq FROM journal_head))), %s
  FROM unnest(%s::text[]) AS sink
ON CONFLICT (sink) DO NOTHING
"""

SET_OFFSET = b"""
INSERT INTO sink_offsets (sink, "offset", updated_at) VALUES (%s, %s, %s)
ON CONFLICT (sink) DO UPDATE SET "offset" = EXCLUDED."offset", pending = NULL,
                                 updated_at = EXCLUDED.updated_at
"""

SET_PENDING = b"UPDATE sink_offsets SET pending = %s WHERE sink = %s"

PENDING = b"SELECT pending FROM sink_offsets WHERE sink = %s"

FORGET_CONSUMER = b"DELETE FROM sink_offsets WHERE sink = %s"

READ_AFTER = b"""
SELECT seq, stream, id, ts, raw FROM (
    SELECT seq, stream, id, ts, raw,
           sum(octet_length(raw)) OVER (ORDER BY seq) AS running,
           row_number() OVER (ORDER BY seq) AS position
      FROM (SELECT seq, stream, id, ts, raw FROM entries
             WHERE seq > %s AND seq <= %s AND stream = ANY(%s::text[])
             ORDER BY seq LIMIT %s) AS candidates
) AS chosen
WHERE running <= %s OR position = 1
ORDER BY seq
"""

READ_RANGE = b"""
SELECT seq, stream, id, ts, raw FROM entries
 WHERE seq > %s AND stream = ANY(%s::text[]) AND ts >= %s AND ts < %s
   AND octet_length(raw) > 0
 ORDER BY seq LIMIT %s
"""

BACKLOG = b"SELECT count(*) FROM entries WHERE seq > %s AND stream = ANY(%s::text[])"

SIZE = b"SELECT coalesce(sum(bytes + entries * %s), 0) FROM journal_stats"

COUNT = b"SELECT coalesce(sum(entries), 0) FROM journal_stats"

PRUNE = b"""
WITH gone AS (
    DELETE FROM entries WHERE seq <= %(delivered)s AND stream = %(stream)s AND ts < %(older)s
    RETURNING octet_length(raw) AS size
), counted AS (
    UPDATE journal_stats
       SET entries = entries - (SELECT count(*) FROM gone),
           bytes = bytes - (SELECT coalesce(sum(size), 0) FROM gone)
     WHERE stream = %(stream)s
)
SELECT count(*) FROM gone
"""

DROP_BYTES = b"""
WITH old AS (
    SELECT seq, octet_length(raw) AS size FROM entries
     WHERE seq <= %(delivered)s AND stream = %(stream)s AND octet_length(raw) > 0
       FOR UPDATE
), emptied AS (
    UPDATE entries AS e SET raw = ''::bytea FROM old WHERE e.seq = old.seq RETURNING old.size
)
UPDATE journal_stats SET bytes = bytes - (SELECT coalesce(sum(size), 0) FROM emptied)
 WHERE stream = %(stream)s
"""

PRUNE_ALERTS = b"""
WITH gone AS (
    DELETE FROM entries
     WHERE stream = %(stream)s AND ts < %(older)s
       AND seq <= (SELECT "offset" FROM sink_offsets WHERE sink = %(sink)s)
    RETURNING octet_length(raw) AS size
), counted AS (
    UPDATE journal_stats
       SET entries = entries - (SELECT count(*) FROM gone),
           bytes = bytes - (SELECT coalesce(sum(size), 0) FROM gone)
     WHERE stream = %(stream)s
)
SELECT count(*) FROM gone
"""

ADD_DEAD_LETTER = b"""
INSERT INTO dead_letters (sink, first_seq, last_seq, reason, created_at, entries)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (sink, first_seq, last_seq) WHERE entry_key IS NULL DO NOTHING
"""

ADD_ENTRY_LETTERS = b"""
INSERT INTO dead_letters (sink, first_seq, last_seq, reason, created_at, entries, entry_key)
SELECT %(sink)s, u.seq, u.seq, u.reason, %(now)s, u.entries, u.entry_key
  FROM unnest(%(seqs)b::int8[], %(reasons)b::text[], %(payloads)b::bytea[], %(keys)b::text[])
       AS u(seq, reason, entries, entry_key)
ON CONFLICT (sink, entry_key) DO NOTHING
"""

ADD_REJECTED = b"""
-- the head is locked first, as the page's own insert does (schema.py): the position is
-- exact, and the transaction still goes in one round trip
INSERT INTO dead_letters (sink, first_seq, last_seq, reason, created_at, entries, entry_key)
SELECT s.sink, h.last_seq, h.last_seq, u.reason, %(now)s, u.entries, u.entry_key
  FROM (SELECT last_seq FROM journal_head FOR UPDATE) AS h,
       unnest(%(sinks)b::text[]) AS s(sink),
       unnest(%(reasons)b::text[], %(payloads)b::bytea[], %(keys)b::text[])
       AS u(reason, entries, entry_key)
ON CONFLICT (sink, entry_key) DO NOTHING
"""

DEAD_LETTERS = b"""
SELECT id, sink, first_seq, last_seq, reason, created_at, entries
  FROM dead_letters WHERE sink = %s ORDER BY id
"""

UPSERT_ALERT_STATE = b"""
INSERT INTO alert_state (rule, group_key, state, updated_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (rule, group_key) DO UPDATE SET state = EXCLUDED.state,
                                            updated_at = EXCLUDED.updated_at
"""
