"""Shared library of netlapse: settings, schemas, store, tape, events, model specs, datasets."""
