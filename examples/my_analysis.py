"""A user's own analysis table, written the way the lab's guide
"Building your own pipeline" describes: a private schema, a Computed table fed
by `ephys.UnitSpikeTimes`, a `key_source` limited to the user's own animals, and
a `make()` that fetches, computes and inserts.

Populate it on the cluster with `djhpc submit MyTable` from this folder (see
djhpc.yaml), or locally with `python my_analysis.py`.
"""

import json
import os
import time

import datajoint as dj
import numpy as np
from lab import BLOB, FLOAT, INT, Schema, acquisition, animal, ephys, schema_name

# On the lab server this would be your own namespace, e.g.
#     schema = dj.schema("user_<USERNAME>_analysis")
# Here it carries the example's prefix so tests can make disposable copies.
schema = Schema(schema_name("analysis"))

# Inter-spike intervals from 1 ms to 10 s, 40 logarithmic bins.
ISI_BINS = np.logspace(-3, 1, 41)


@schema
class MyTable(dj.Computed):
    definition = f"""
    -> ephys.UnitSpikeTimes
    ---
    n_spikes      : {INT}      # spikes in the session
    firing_rate   : {FLOAT}    # Hz, over the whole session
    isi_histogram : {BLOB}     # counts of inter-spike intervals in ISI_BINS
    """

    @property
    def key_source(self):
        # Only my own animals, not everyone's: 4 of the 5 in the example data.
        ks = ephys.UnitSpikeTimes & (
            animal.Animal
            & [
                {"animal_name": 26230},
                {"animal_name": 26231},
                {"animal_name": 72544},
                {"animal_name": 95391},
            ]
        )
        return ks

    def make(self, key):
        # Lets tests count how often (and in which process) each key's make()
        # starts, and simulate slow keys (0 s, no wait, by default).
        if os.environ.get("EXAMPLE_MAKE_LOG"):
            with open(os.environ["EXAMPLE_MAKE_LOG"], "a") as log:
                log.write(json.dumps({"key": key, "pid": os.getpid()}, default=str) + "\n")
        # ...and a make() that needs memory: EXAMPLE_MAKE_MB megabytes, written (so
        # they are really used) and held while it sleeps; only for unit
        # EXAMPLE_MAKE_MB_UNIT when that is set.
        big = os.environ.get("EXAMPLE_MAKE_MB_UNIT") in (None, str(key.get("unit_id")))
        ballast = np.ones(int(float(os.environ.get("EXAMPLE_MAKE_MB", "0")) * 2**20) if big else 0,
                          dtype=np.uint8)
        time.sleep(float(os.environ.get("EXAMPLE_MAKE_SECONDS", "0")))
        del ballast
        spike_times = (ephys.UnitSpikeTimes & key).fetch1("spike_times")
        if len(spike_times) == 0:
            raise ValueError(f"Unit {key} has an empty spike train: nothing to analyse")
        duration = (acquisition.Session & key).fetch1("session_duration")
        new_row = calculate_data(np.asarray(spike_times, dtype=float), float(duration))
        self.insert1({**key, **new_row})


def calculate_data(spike_times, duration):
    """Spike count, mean rate and ISI histogram of one (non-empty) spike train."""
    counts, _ = np.histogram(np.diff(spike_times), bins=ISI_BINS)
    return {
        "n_spikes": int(spike_times.size),
        "firing_rate": spike_times.size / duration,
        "isi_histogram": counts,
    }


if __name__ == "__main__":
    MyTable.populate(display_progress=True)
