"""What a bug in an agent does: end the worker process at once.

Bad input never gets here (it goes to the dead-letter topic). An exception from the core is a bug; a Faust agent
that raised would stop consuming while the process lives on, and the pipeline would wait forever. Exiting lets the
supervisor (`papertape run`, or docker's restart policy) start a new worker, which resumes from the last checkpoint
(inputs after it were not acked, so nothing is lost) and, if the bug repeats, gives up with the log's path."""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
EXIT_CODE = 70  # EX_SOFTWARE


def die(agent: str, exc: BaseException) -> None:
    log.critical("agent %s crashed: %s: %s; the worker exits so that a new one resumes from the checkpoint",
                 agent, type(exc).__name__, exc, exc_info=exc)
    print(f"papertape: agent {agent} crashed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(EXIT_CODE)
