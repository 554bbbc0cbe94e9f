"""Test helpers for a real one-node Slurm cluster (see cluster.py, slurm_up.sh)."""
