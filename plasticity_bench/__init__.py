"""plasticity-bench: one import name for the four folders beside this one.

harness/, tasks/, trainers/ and reports/ stay at the top of the repository (in the order the data
flows); the links in this folder install them as plasticity_bench.harness, .tasks, .trainers and
.reports, so a user's own `tasks.py` or `reports/` never shadows (or is shadowed by) them.
"""
