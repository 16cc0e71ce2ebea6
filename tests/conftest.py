"""Test-session settings."""

import os

# Busy-waiting OpenMP threads collapse when the CPU is shared with other work;
# sleeping ones cost little here. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
