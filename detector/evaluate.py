"""COCO-style evaluation with pycocotools: mAP50, mAP50:95, per-class AP and recall."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from detector.types import CLASS_NAMES

Target = dict[str, np.ndarray]  # {"boxes": [N, 4], "labels": [N]}


def _coco_gt(targets: Sequence[Target], sizes: Sequence[tuple[int, int]], class_names: Sequence[str]) -> Any:
    from pycocotools.coco import COCO

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, (t, (h, w)) in enumerate(zip(targets, sizes)):
        images.append({"id": i, "height": int(h), "width": int(w)})
        for box, label in zip(np.asarray(t["boxes"]).reshape(-1, 4), np.asarray(t["labels"]).reshape(-1)):
            x0, y0, x1, y1 = (float(v) for v in box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k, "name": n} for k, n in enumerate(class_names)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_metrics(
    targets: Sequence[Target],
    predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Ground truth and predictions (boxes, scores, labels) per image -> metrics dict.

    Keys: ``map50``, ``map`` (50:95), ``recall50`` (IoU 0.5, 100 detections), ``recall``
    (50:95), ``per_class`` {name: {"ap50", "ap", "recall50"}}, ``images``, ``objects``.
    """
    from pycocotools.cocoeval import COCOeval

    gt = _coco_gt(targets, sizes, class_names)
    dets = [
        [i, float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]), float(s), int(c)]
        for i, (boxes, scores, labels) in enumerate(predictions)
        for b, s, c in zip(boxes, scores, labels)
    ]
    n_obj = len(gt.dataset["annotations"])
    if not dets or n_obj == 0:
        empty = {n: {"ap50": 0.0, "ap": 0.0, "recall50": 0.0} for n in class_names}
        return {
            "map50": 0.0,
            "map": 0.0,
            "recall50": 0.0,
            "recall": 0.0,
            "per_class": empty,
            "images": len(targets),
            "objects": n_obj,
        }
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(np.array(dets, dtype=np.float64))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    recall = ev.eval["recall"]  # [T, K, A, M]

    def mean_valid(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else 0.0

    per_class = {
        name: {
            "ap50": mean_valid(precision[0, :, k, 0, -1]),
            "ap": mean_valid(precision[:, :, k, 0, -1]),
            "recall50": mean_valid(recall[0, k, 0, -1]),
        }
        for k, name in enumerate(class_names)
    }
    return {
        "map50": float(ev.stats[1]) if ev.stats[1] > -1 else 0.0,
        "map": float(ev.stats[0]) if ev.stats[0] > -1 else 0.0,
        "recall50": mean_valid(recall[0, :, 0, -1]),
        "recall": float(ev.stats[8]) if ev.stats[8] > -1 else 0.0,
        "per_class": per_class,
        "images": len(targets),
        "objects": n_obj,
    }


def evaluate_model(
    model: Any, dataset: Any, pre: Any, batch_size: int = 8, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, Any]:
    """Run ``model`` (a GFL in eval mode) on every item of ``dataset`` and score it."""
    from detector.inference import predict_arrays

    items = [dataset[i] for i in range(len(dataset))]
    images = [np.asarray(im, dtype=np.float32) for im, _ in items]
    was_training = model.training
    model.eval()
    try:
        preds = predict_arrays(model, images, pre, batch_size, channels_last=False)
    finally:
        model.train(was_training)
    return coco_metrics([t for _, t in items], preds, [im.shape for im in images], class_names)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short human-readable table."""
    lines = [
        f"images {metrics['images']}, objects {metrics['objects']}",
        f"mAP50 {metrics['map50']:.3f}   mAP50:95 {metrics['map']:.3f}   recall50 {metrics['recall50']:.3f}",
        f"{'class':<14}{'AP50':>8}{'AP50:95':>10}{'recall50':>10}",
    ]
    for name, m in metrics["per_class"].items():
        lines.append(f"{name:<14}{m['ap50']:>8.3f}{m['ap']:>10.3f}{m['recall50']:>10.3f}")
    return "\n".join(lines)
