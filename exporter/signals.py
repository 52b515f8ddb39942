"""How the process reacts to signals: SIGTERM and SIGINT stop it cleanly; SIGHUP, which
terminals and some supervisors send, is logged and otherwise ignored (the configuration is
read at start: restart to change it)."""

from __future__ import annotations

import logging
import signal
import threading


def stop_on_signals(log: logging.Logger) -> threading.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    def _hangup(signum: int, _frame: object) -> None:
        log.warning(
            "received SIGHUP: ignored (the configuration is read at start: restart to apply it)"
        )

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _hangup)
    return stop
