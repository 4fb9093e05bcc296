"""Importing patients in bulk: CSV and FHIR R4 files, checked row by row like enrollment."""
