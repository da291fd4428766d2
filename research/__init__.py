"""Research probes behind docs/research.md: run each from the repository root as `python -m research.<name>`;
results stay under research/."""
