"""The live webcam's newest-frame rule: frames sent faster than the model answers are dropped, never
queued, so the answer is never more than one frame behind; sessions do not wait for each other."""

import threading
import time

import numpy as np

from d2ov_core.serve.live import LiveSessions, overlay


def stream(sessions: LiveSessions, session: str, frames: int, every_s: float, work_s: float):
    """Send ``frames`` frames ``every_s`` apart (each its own thread, as Gradio runs each request); the
    work takes ``work_s``. Returns ``[(frame sent, newest frame sent when its answer came, stats)]``."""
    sent = [0]
    answers = []
    lock = threading.Lock()

    def one(i: int):
        def work():
            time.sleep(work_s)
            return i

        out = sessions.submit(session, work)
        if out is not None:
            with lock:
                answers.append((out[0], sent[0], out[1]))

    threads = []
    for i in range(1, frames + 1):
        sent[0] = i
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(every_s)
    for t in threads:
        t.join()
    return answers


def test_frames_faster_than_the_model_are_dropped_and_the_answer_stays_current():
    sessions = LiveSessions()
    answers = stream(sessions, "a", frames=60, every_s=0.01, work_s=0.05)
    done = [a[0] for a in answers]
    assert done == sorted(done) and done[-1] == 60  # in order, and the last frame is always answered
    assert 3 <= len(done) <= 30, done  # ~0.6 s of frames, at most 20 answers/s: most were dropped
    # when an answer starts, its frame is the newest: the answer lags by what arrived during the work
    # (0.05 s / 0.01 s = 5 frames), never by a queue that grows (queued, the last answer would lag ~50)
    lags = [newest - frame for frame, newest, _ in answers]
    assert max(lags) <= 15, lags
    stats = [s for _, _, s in answers]
    assert stats[-1].frame == 60 and stats[-1].dropped <= 60 - len(done)
    # every frame was answered or counted as dropped: a frame that waited for the lock while the newest
    # one took it is counted when it gets it, maybe after that answer; one more frame sees them all
    _, last = sessions.submit("a", lambda: None)
    assert last.frame == 61 and last.dropped == 60 - len(done)
    assert all(s.latency_ms >= 50 for s in stats), [s.latency_ms for s in stats]  # the work's 50 ms at least
    assert 0 < stats[-1].fps <= 21, stats[-1].fps  # at most one answer per 50 ms


def test_a_slower_camera_loses_no_frame():
    answers = stream(LiveSessions(), "a", frames=10, every_s=0.03, work_s=0.005)
    assert [a[0] for a in answers] == list(range(1, 11)) and answers[-1][2].dropped == 0


def test_sessions_run_side_by_side_and_each_one_frame_at_a_time():
    sessions = LiveSessions()
    running: dict[str, int] = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0, "both": 0}
    lock = threading.Lock()

    def frame(name):
        def work():
            with lock:
                running[name] += 1
                most[name] = max(most[name], running[name])
                most["both"] = max(most["both"], running["a"] + running["b"])
            time.sleep(0.05)
            with lock:
                running[name] -= 1

        sessions.submit(name, work)

    threads = [threading.Thread(target=frame, args=(n,)) for _ in range(4) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == {"a": 1, "b": 1, "both": 2}


def test_sessions_are_bounded():
    sessions = LiveSessions(keep=3)
    for name in "abcde":
        sessions.submit(name, lambda: None)
    assert list(sessions._sessions) == ["c", "d", "e"]


def test_overlay_writes_in_the_corner_only():
    rgb = np.full((120, 200, 3), 200, np.uint8)
    out = overlay(rgb, "3 detections · 9.5 frames/s · 104 ms")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[2, 2] == 0).all() and (out[-1, -1] == 200).all()
    assert (out[60:, :] == 200).all()
