"""The foundation every layer imports: errors, registries, progress bars, provenance, plain-data items."""
