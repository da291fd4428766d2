"""The product's benchmarks: run each from the repository root as `python -m bench.<name>` (see its docstring);
results go to bench/results/."""
