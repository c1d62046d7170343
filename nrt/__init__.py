"""nrt: audio editing with non-rigid text prompts."""

import os

# OpenMP threads that spin while they wait make torch many times slower on a machine whose cores
# are busy with other work; passive ones sleep. Only takes effect when nrt is imported before
# torch (the command line, the sweep script and the service are), and never overrides a setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
