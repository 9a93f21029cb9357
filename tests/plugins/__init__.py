"""Plugin modules that tests/test_extension_points.py names in PLASTICITY_BENCH_PLUGINS."""
