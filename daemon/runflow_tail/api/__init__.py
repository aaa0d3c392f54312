"""The Runflow API as we use it: ``client`` (requests, pages, pacing), ``errors`` (what an
answer means), ``settings`` (the ``[api]`` section) and ``range_query`` (the range filters
the poller adds)."""
