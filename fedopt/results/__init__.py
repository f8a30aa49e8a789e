"""Run directories, environment records and reports."""
