"""djhpc: populate DataJoint tables on Slurm clusters.

`djhpc submit MyTable` computes the table's pending keys once, splits them into
chunks and runs each chunk as a Slurm array task (or a local process); `djhpc
status` shows one aggregated picture of every run.
"""

__version__ = "0.1.0"
