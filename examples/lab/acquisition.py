"""Recording sessions (a miniature of the shared `acquisition` schema)."""

import datajoint as dj

# `animal` is used by `-> animal.Animal` in the definition below.
from lab import FLOAT, INT, Schema, animal, schema_name  # noqa: F401

schema = Schema(schema_name("acquisition"))


@schema
class Session(dj.Manual):
    definition = f"""
    -> animal.Animal
    session_id       : {INT}
    ---
    session_date     : date
    session_duration : {FLOAT}     # seconds
    """
