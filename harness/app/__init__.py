"""Orchestration: configuration, the organism, the run pipeline and the `bench` command line."""
