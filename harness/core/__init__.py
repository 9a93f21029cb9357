"""The foundation every layer imports: errors, registries, progress bars, provenance, plain-data items,
declared settings (options.py: help, choices and ranges of a settings dataclass, checked in one place)."""
