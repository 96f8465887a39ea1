"""Named places where a crash test may SIGKILL the daemon, at the exact worst moment.

`KITCHEN_EDGE_CRASHPOINT=after_send` makes the process kill itself with SIGKILL right after
a ticket's bytes reached the printer and before that was committed: the moment a naive
spooler would print the ticket twice without saying so. `aggregator_after_commit`: a
platform's call to the aggregator API is on disk and not yet answered.
`marketplace_after_import`: a marketplace order's import (with its acknowledgement call) is
on disk and the acknowledgement not yet sent. Unset (always, in production) a crash point
costs one comparison.
"""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("KITCHEN_EDGE_CRASHPOINT", "")

POINTS = ("after_send", "after_commit_before_ack", "aggregator_after_commit",
          "marketplace_after_import", "openapp_before_publish")


def reached(name: str) -> None:
    if _ARMED and name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
