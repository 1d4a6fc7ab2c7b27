"""Progress bars a caller can follow and cancel (lmscope.progress), without ever leaving tqdm's lock held."""

import io
import threading

import pytest

from lmscope.progress import Cancelled, listening, listening_now, tqdm


def test_listener_sees_refreshes_only_in_its_context():
    seen = []
    with listening(seen.append):
        assert listening_now()
        for _ in tqdm(range(5), desc="work", mininterval=0, file=io.StringIO()):
            pass
    assert not listening_now()
    assert seen and seen[-1]["desc"] == "work" and seen[-1]["n"] == 5 and seen[-1]["total"] == 5
    before = len(seen)
    list(tqdm(range(3), mininterval=0, file=io.StringIO()))
    assert len(seen) == before


def test_a_listener_that_raises_stops_the_loop_and_releases_the_lock():
    def cancel(update):
        if update["n"] >= 2:
            raise Cancelled("stop")

    done = []
    with listening(cancel), pytest.raises(Cancelled):
        for i in tqdm(range(100), mininterval=0, file=io.StringIO()):
            done.append(i)
    assert len(done) < 100
    # another thread can still make a bar: tqdm's global lock was released (it once deadlocked here)
    worker = threading.Thread(target=lambda: list(tqdm(range(3), file=open("/dev/null", "w"))))  # noqa: SIM115
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
