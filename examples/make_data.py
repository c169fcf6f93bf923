"""Declare the example's lab schemas and fill them with generated data.

    python make_data.py                       # 5 animals x 4 sessions x 40 units
    python make_data.py --empty-units 3       # 3 units MyTable will fail on
    python make_data.py --drop                # drop every example schema

or from Python: `make_data(animals=5, sessions=4, units=40, empty_units=0)`
returns the number of `ephys.UnitSpikeTimes` rows; `drop_all()` removes it all.

Deterministic (seeded per unit) and idempotent (rows that exist are kept as they
are, so to change `empty_units` drop first). Schema names start with
EXAMPLE_PREFIX (default djhpc_example); the connection is the user's own
DataJoint configuration.
"""

import argparse
import datetime
import sys

import numpy as np

# The first five animal names; more animals get 30001, 30002, ...
# my_analysis.MyTable.key_source analyses the first four, not the fifth.
ANIMAL_NAMES = [26230, 26231, 72544, 95391, 26148]
ANALYSED = 4
SPECIES = ["mouse", "mouse", "rat", "rat", "mouse"]
QUALITIES = ["good", "good", "good", "mua", "noise"]
INSERT_BATCH = 200  # rows per insert, well below the server's packet limit


def animal_names(count):
    return [
        ANIMAL_NAMES[i] if i < len(ANIMAL_NAMES) else 30000 + i - len(ANIMAL_NAMES) + 1
        for i in range(count)
    ]


def spike_train(animal_name, session_id, unit_id, duration):
    """A Poisson spike train, the same every time for the same unit."""
    rng = np.random.default_rng([animal_name, session_id, unit_id])
    rate = float(np.clip(rng.lognormal(np.log(4.0), 0.7), 0.2, 40.0))  # Hz
    n_spikes = max(int(rng.poisson(rate * duration)), 2)
    return np.sort(rng.uniform(0.0, duration, n_spikes))


def make_data(animals=5, sessions=4, units=40, empty_units=0):
    """Fill animal, acquisition and ephys; return the number of UnitSpikeTimes rows.

    `empty_units` units of the analysed animals (the first four) get an empty
    spike train, on which MyTable.make raises ValueError.
    """
    from lab import acquisition, animal, ephys  # declares the schemas on first import

    names = animal_names(animals)
    analysed = [
        (a, s, u)
        for a in names[:ANALYSED]
        for s in range(1, sessions + 1)
        for u in range(1, units + 1)
    ]
    if not 0 <= empty_units <= len(analysed):
        raise ValueError(f"empty_units must be between 0 and {len(analysed)}, not {empty_units}")
    chosen = np.random.default_rng(2024).choice(len(analysed), size=empty_units, replace=False)
    empty = {analysed[i] for i in chosen}

    animal.Animal.insert(
        [
            {
                "animal_name": a,
                "species": SPECIES[i % len(SPECIES)],
                "sex": "FM"[i % 2],
                "date_of_birth": datetime.date(2023, 1, 1) + datetime.timedelta(days=7 * i),
            }
            for i, a in enumerate(names)
        ],
        skip_duplicates=True,
    )

    session_rows = []
    for i, a in enumerate(names):
        for s in range(1, sessions + 1):
            session_rows.append(
                {
                    "animal_name": a,
                    "session_id": s,
                    "session_date": datetime.date(2024, 3, 1) + datetime.timedelta(days=i + 2 * s),
                    "session_duration": 120.0 + 30.0 * ((i + s) % 4),
                }
            )
    acquisition.Session.insert(session_rows, skip_duplicates=True)

    unit_rows, spike_rows = [], []
    for session in session_rows:
        a, s = session["animal_name"], session["session_id"]
        for u in range(1, units + 1):
            key = {"animal_name": a, "session_id": s, "unit_id": u}
            unit_rows.append(
                {**key, "quality": QUALITIES[u % len(QUALITIES)], "depth": float(20 * u)}
            )
            spikes = (
                np.zeros(0)
                if (a, s, u) in empty
                else spike_train(a, s, u, session["session_duration"])
            )
            spike_rows.append({**key, "spike_times": spikes})
    ephys.Unit.insert(unit_rows, skip_duplicates=True)
    for start in range(0, len(spike_rows), INSERT_BATCH):
        ephys.UnitSpikeTimes.insert(spike_rows[start : start + INSERT_BATCH], skip_duplicates=True)
    return len(ephys.UnitSpikeTimes())


def drop_all():
    """Drop every example schema under the current prefix, dependents first, no prompt.

    Also forgets the imported example modules, so a later make_data() in the same
    process declares the schemas again (with the then current EXAMPLE_PREFIX).
    """
    import datajoint as dj
    from lab import DJ2, schema_name

    existing = set(dj.list_schemas())
    for name in ("analysis", "ephys", "acquisition", "animal"):
        if schema_name(name) not in existing:
            continue
        schema = dj.Schema(schema_name(name), create_schema=False, create_tables=False)
        if DJ2:
            schema.drop(prompt=False)
        else:
            schema.drop(force=True)
    for module in [m for m in sys.modules if m in ("my_analysis", "lab") or m.startswith("lab.")]:
        del sys.modules[module]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--animals", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--units", type=int, default=40, help="units per session")
    parser.add_argument(
        "--empty-units",
        type=int,
        default=0,
        help="units of the analysed animals with an empty spike train",
    )
    parser.add_argument("--drop", action="store_true", help="drop all example schemas and stop")
    args = parser.parse_args(argv)
    if args.drop:
        drop_all()
        print("Dropped the example schemas.")
        return
    rows = make_data(args.animals, args.sessions, args.units, args.empty_units)
    print(f"ephys.UnitSpikeTimes holds {rows} units.")


if __name__ == "__main__":
    main()
