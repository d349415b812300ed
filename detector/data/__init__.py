"""Detector data: the synthetic cervical MR generator, COCO / YOLO loaders and augmentation.

Every dataset yields ``(image float32 [H, W], {"boxes": float32 [N, 4] x0 y0 x1 y1 px,
"labels": int64 [N]})`` with class indices of ``detector.types.CLASS_NAMES``.
Import the submodules directly (this package imports nothing heavy).
"""
