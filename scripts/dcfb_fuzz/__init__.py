"""Seeded fuzzing of the app's DICOM input (mutations.py: what is mutated; harness.py: how outcomes are judged)."""
