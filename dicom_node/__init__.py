"""MedDet Node: the DICOM half of the product (receive, spool, assemble, select, audit, send)."""

__version__ = "0.1.0"
