"""Units and their spike trains (a miniature of the shared `ephys` schema).

On the lab server these are Imported tables filled by the pipeline's workers
from the spike sorter's output; here they are Manual so `make_data.py` can
insert generated data.
"""

import datajoint as dj

# `acquisition` is used by `-> acquisition.Session` in the definition below.
from lab import BLOB, FLOAT, INT, Schema, acquisition, schema_name  # noqa: F401

schema = Schema(schema_name("ephys"))


@schema
class Unit(dj.Manual):
    definition = f"""
    -> acquisition.Session
    unit_id  : {INT}
    ---
    quality  : varchar(8)      # curation label: good, mua or noise
    depth    : {FLOAT}         # micrometres along the probe
    """


@schema
class UnitSpikeTimes(dj.Manual):
    definition = f"""
    -> Unit
    ---
    spike_times : {BLOB}       # seconds from the start of the session, sorted
    """
