"""The fault suite behind ``benchmarks/faults.py`` (issue 12): soak, outages, full disk, fuzz."""
