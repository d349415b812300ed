"""The second stage: per-disc crops at a fixed physical spacing, a small CNN for the
herniation call (with the protrusion in mm) and one for the disc's level, and the calibration
of the call. The detector finds and boxes the discs; this package judges each one."""
