"""Experiments at scale: grids of runs, the results store they finish into, and the backends that run them."""
