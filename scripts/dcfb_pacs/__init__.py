"""DICOM networking for scripts/pacs_fusion.py: retrieve a study from a PACS and send results back."""
