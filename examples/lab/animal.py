"""The lab's animal registry (a miniature of the shared `animal` schema)."""

import datajoint as dj

from lab import INT, Schema, schema_name

schema = Schema(schema_name("animal"))


@schema
class Animal(dj.Manual):
    definition = f"""
    animal_name   : {INT}          # the lab's animal ID, e.g. 26230
    ---
    species       : varchar(32)
    sex           : char(1)        # F, M or U
    date_of_birth : date
    """
