"""Test-wide settings. The suite runs two pytest workers on two cores: one torch thread per
process (and per subprocess, through the environment) avoids oversubscription, which makes tiny
models tens of times slower."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
