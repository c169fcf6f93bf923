"""Splitting a running chunk, straight on the ledger: many tasks at once, on the real server.

An owner makes its chunk's keys one by one while three idle tasks keep splitting
off the unstarted half of whatever chunk has most left, and work what they took
the same way. However the splits and the owners' steps interleave, every key
is made by exactly one of them, and the chunks still cover each key once.
"""

from __future__ import annotations

import itertools

from .conftest import Project, q

RACE = """
import json, threading, time
from djhpc import dj
from djhpc.ledger import Ledger
from djhpc.plan import Chunk

SCHEMA, KEYS = {schema!r}, 400
setup = Ledger(dj.connection(), SCHEMA)
setup.create()
setup.add_chunks(1, 1, [Chunk(chunk=0, lo=0, hi=KEYS)])
assert setup.claim(1, 0, job_id=None, host="h", pid=1, connection_id=0)
# Nothing started yet: nothing to split (the owner has not reserved its keys).
early = setup.split(1, 1, job_id=None, host="s", pid=9, connection_id=0)
made, splits, lock = [], [], threading.Lock()

def work(ledger, chunk, lo):
    reach, n = lo, lo
    while True:
        if n >= reach:
            reach = ledger.advance(1, chunk, n + 1)[0]
            if n >= reach:
                return  # the rest was split off
        with lock:
            made.append(n)
        n += 1
        time.sleep(0.002)

def owner():
    work(Ledger(dj.separate_connection(), SCHEMA), 0, 0)

def idle(pid):
    ledger = Ledger(dj.separate_connection(), SCHEMA)
    while len(made) < KEYS - 2:
        split = ledger.split(1, 1, job_id=None, host="s", pid=pid, connection_id=0)
        if split is None:
            time.sleep(0.01)
            continue
        new, old = split
        with lock:
            splits.append((new.chunk, old.chunk))
        work(ledger, new.chunk, new.lo)

threads = [threading.Thread(target=owner)] + [
    threading.Thread(target=idle, args=(p,)) for p in (2, 3, 4)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=120)
ranges = sorted((c.lo, c.hi) for c in setup.chunks(1))
print(json.dumps({{"early": early is None, "made": sorted(made), "splits": len(splits),
                  "ranges": ranges, "numbers": sorted(c.chunk for c in setup.chunks(1))}}))
"""


def test_splitting_never_gives_a_key_to_two_tasks(project: Project) -> None:
    out = project.python(RACE.format(schema=project.ledger), timeout=180)
    assert out["early"]  # a chunk whose task has not started is never split
    assert out["made"] == list(range(400))  # every key once, by one task
    assert out["splits"] >= 3, out["splits"]  # the idle tasks did take work
    ranges = out["ranges"]
    assert ranges[0][0] == 0 and ranges[-1][1] == 400
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # no gap, no overlap
    assert out["numbers"] == list(range(len(ranges)))  # each split got its own chunk number


def test_a_ledger_an_earlier_djhpc_made_gains_the_new_chunk_columns(project: Project) -> None:
    project.make_data("--sessions", "1", "--units", "1")  # 4 keys
    out = project.djhpc_json("submit", "MyTable", "-e", "local", "--wait")
    chunk = f"{q(project.ledger)}.{q('chunk')}"
    for column in ("started_to", "split_from"):  # as the ledger was before splitting
        project.sql(f"ALTER TABLE {chunk} DROP COLUMN {column}")
    status = project.djhpc_json("status", str(out["run_id"]))
    assert status["state"] == "done" and status["chunks"][0]["split_from"] is None
    assert project.sql(f"SELECT started_to, split_from FROM {chunk}")  # the columns are back
