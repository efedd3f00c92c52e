"""Starts `streams.trainer` processes by forking one that has imported it already, so a
test can SIGKILL the trainer many times without paying torch's import (~20 s on this
machine) each time. Each child is a whole trainer process: its memory, its consumer,
its connections, all lost to the SIGKILL as with a fresh start.

  python -m tests.streams.trainer_forks TRAINER-FLAGS...

Reads a line per start from stdin and answers the child's pid on stdout.
"""

from __future__ import annotations

import os
import signal
import sys

from streams.trainer.__main__ import main


def serve() -> None:
    flags = sys.argv[1:]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped as they die
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:  # the trainer
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.dup2(2, 1)  # stdout carries only pids; the trainer's lines go to stderr
            sys.argv = ["streams.trainer", *flags]
            try:
                main()
            finally:
                os._exit(0)
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
