"""`djhpc status RUN --watch` on a real terminal (a pseudo-terminal).

The run is real (local executor, real database) and slow enough to be watched
through several refreshes. The view must redraw in place (the cursor goes back
up over the last frame; the screen is never cleared), show the run moving, and
end cleanly on Ctrl-C: exit 0, no traceback, the cursor shown again.
"""

from __future__ import annotations

import re

import pexpect
import pytest

from .conftest import BIN, Project

CURSOR_UP = "\x1b[1A"  # how rich's live view goes back over its last frame
CLEAR_SCREEN = "\x1b[2J"  # what a redraw by clearing the screen sends
SHOW_CURSOR = "\x1b[?25h"


@pytest.mark.once
def test_status_watch_redraws_in_place_and_stops_on_ctrl_c(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "6")  # 24 keys
    env = project.env(EXAMPLE_MAKE_SECONDS="2")  # 24 s in two tasks: longer than the view
    run_id = project.djhpc_json("submit", "MyTable", "-e", "local", "--tasks", "2",
                                env=env)["run_id"]
    watch = pexpect.spawn(str(BIN / "djhpc"),
                          ["status", str(run_id), "--watch", "--interval", "1"],
                          cwd=str(project.workdir), env=env, dimensions=(40, 140),
                          encoding="utf-8", timeout=60)
    frames: list[str] = []
    try:
        # Frames until the run is seen to move (its tasks may take a while to
        # start on a busy machine), at least three, at most 40.
        while len(frames) < 40:
            watch.expect(r"refreshed \d\d:\d\d:\d\d")
            frames.append(watch.before + watch.after)
            counts = {int(n) for n in re.findall(r"(\d+)/24 done", "".join(frames))}
            if len(frames) >= 3 and len(counts) >= 2:
                break
        watch.sendintr()
        watch.expect(pexpect.EOF)
        tail = watch.before
    finally:
        watch.close(force=True)
        project.djhpc("cancel", str(run_id), "--yes")  # its tasks must not outlive the schemas
    output = "".join(frames)
    assert watch.exitstatus == 0 and watch.signalstatus is None, tail
    assert "Traceback" not in tail + output and "Error" not in tail
    assert all(f"Run {run_id}" in frame for frame in frames)  # a whole frame per refresh
    assert all(CURSOR_UP in frame for frame in frames[1:])  # drawn over the one before
    assert CLEAR_SCREEN not in output + tail
    assert SHOW_CURSOR in tail  # the live view put the terminal back
    done = [int(n) for n in re.findall(r"(\d+)/24 done", output)]
    assert len(done) >= 3 and done == sorted(done) and done[0] < done[-1], done  # it moved
