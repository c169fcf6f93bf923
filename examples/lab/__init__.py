"""A miniature copy of the lab's shared pipeline: `animal`, `acquisition`, `ephys`.

On the lab server these schemas already exist and are filled by the pipeline's
own workers; a user only imports them. Here `make_data.py` declares and fills
them so the example can run anywhere.

The connection comes entirely from the user's DataJoint configuration (DJ_HOST,
DJ_USER, DJ_PASS, ... or a config file); nothing here sets it.
"""

import os

import datajoint as dj

# Every schema name starts with this prefix, so tests can make unique,
# disposable copies (set EXAMPLE_PREFIX before the first import).
PREFIX = os.environ.get("EXAMPLE_PREFIX", "djhpc_example")

# The few lines that differ between DataJoint 0.14 and 2.x:
# 2.x spells portable types int32/float64 and a serialised blob `<blob>`
# (a plain `longblob` would hold raw bytes there); 0.14 uses the MySQL names.
DJ2 = dj.__version__.split(".")[0] != "0"
INT, FLOAT, BLOB = ("int32", "float64", "<blob>") if DJ2 else ("int", "double", "longblob")
Schema = dj.Schema  # both lines; 0.14 also calls it dj.schema, 2.x does not


def schema_name(name):
    """The database schema for `name` under the current prefix."""
    return f"{PREFIX}_{name}"
