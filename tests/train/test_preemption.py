"""PreemptionWatcher: SIGTERM and a first Ctrl-C ask for a save; a second Ctrl-C aborts, even
when its KeyboardInterrupt is lost in a garbage-collector callback."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from mmtx.train.preemption import PreemptionWatcher

needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers are set from the main thread only",
)


@needs_main_thread
def test_sigterm_asks_for_a_save_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with PreemptionWatcher() as watcher:
        assert not watcher.should_stop(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.should_stop(1)
        assert watcher.reason == "preemption notice"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@needs_main_thread
def test_first_ctrl_c_asks_for_a_save_and_the_second_interrupts_at_once(capsys):
    with PreemptionWatcher() as watcher:
        os.kill(os.getpid(), signal.SIGINT)
        assert watcher.should_stop(1) and watcher.reason == "interrupted (Ctrl-C)"
        assert "press Ctrl-C again" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            watcher.should_stop(2)


@needs_main_thread
def test_a_second_ctrl_c_lost_in_a_callback_is_raised_by_should_stop():
    """Python prints and drops an exception raised inside a gc callback; the loop must still
    exit without saving."""
    with PreemptionWatcher() as watcher:
        os.kill(os.getpid(), signal.SIGINT)
        second = signal.getsignal(signal.SIGINT)
        try:  # what the interpreter does around a gc callback
            second(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt):
            watcher.should_stop(3)
