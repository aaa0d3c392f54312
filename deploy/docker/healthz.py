"""The image's HEALTHCHECK: is runflow-tail alive? GET /healthz, exit 0 on 200, else 1.

Liveness only (the process and its event loop answer), from the standard library alone
and run with `python -I -S`, so a check every 30 s costs ~35 ms of CPU instead
of starting the whole command line (`runflow-tail health`, ~0.4 s). Readiness (every
stream polled, no sink failing) is `runflow-tail health` (/readyz): see compose.yaml.
"""

import http.client
import os
import sys

listen = os.environ.get("RUNFLOW_TAIL_SERVER__LISTEN", "127.0.0.1:9464")
host, _, port = listen.rpartition(":")
host = host.strip("[]")
# The daemon listens on a wildcard address; the check connects to this container's loopback.
host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
try:
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/healthz")
    status = connection.getresponse().status
except (OSError, ValueError) as exc:
    print(f"runflow-tail is not answering on {listen}: {exc}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if status == 200 else 1)
