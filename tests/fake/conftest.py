"""The fake-scheduler tier: fake sbatch/scancel/scontrol on PATH, a real database.

Fast lifecycle tests for what a real Slurm will not do on demand (reject the
second of several arrays). The real tier covers the rest.
"""

from tests.real.conftest import project  # noqa: F401  (the same disposable example)
