"""How the process reacts to signals: SIGTERM and SIGINT stop it cleanly."""

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

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop
