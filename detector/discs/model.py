"""The second stage's networks: small CNNs over disc crops.

``DiscNet`` is a plain stack of stride-2 conv blocks, global average pooling and a linear
head. Two of them make the second stage (``DiscModels``):

* the herniation net reads a ``HERNIATION_CROP`` and outputs [herniation logit, posterior
  protrusion in mm];
* the level net reads a ``LEVEL_CROP`` and outputs one logit per class of ``LEVEL_CLASSES``
  (the disc levels C2-C3 .. T1-T2, and "not a disc").

The level net may be a ``LevelEnsemble`` of several, whose output is the log of their mean
probability (a drop-in for logits wherever a softmax follows); the herniation net may be a
``HerniationEnsemble``, whose outputs are their members' mean (logit and mm). ``DiscModels``
also carries the calibration and operating point (``Calibration``), and round-trips through a
plain dict stored inside the detector checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detector.discs.calibration import Calibration
from detector.discs.crops import HERNIATION_CROP, LEVEL_CROP, CropSpec
from detector.discs.locator import LevelLocator
from detector.naming import FUSIONS, LEVEL_CLASSES, UNSTORED_RULE, NamingRule


class DiscNet(nn.Module):
    """Crops [N, C, S, S] (normalised) -> outputs [N, n_out]."""

    def __init__(self, in_channels: int, n_out: int, widths: tuple[int, ...] = (16, 32, 48, 64, 96)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(c, n_out))
        self.widths = widths

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, S, S] -> [N, n_out]."""
        return self.head(self.features(x).mean(dim=(2, 3)))


def member_states(payload: dict[str, Any], key: str) -> list[dict[str, Tensor]]:
    """The state(s) of a second-stage payload's ``key`` net (``to_payload``: "herniation" or
    "level"): one per member of an ensemble, or the one net's."""
    states = payload[key]
    return states if isinstance(states, list) else [states]


class Ensemble(nn.Module):
    """Two or more ``DiscNet`` read alike; subclasses say how their outputs combine."""

    def __init__(self, members: list[DiscNet]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"{type(self).__name__}: expected at least 2 nets, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.widths = members[0].widths


class LevelEnsemble(Ensemble):
    """Level nets averaged: crops -> log of their mean softmax [N, n_classes].

    A softmax of this output is the members' mean probability, so it stands wherever a level
    net's logits go (the analysis's views, calibration, ``argmax``)."""

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([torch.softmax(net(x), dim=1) for net in self.members]).mean(dim=0)
        return torch.log(probs.clamp_min(1e-9))


class HerniationEnsemble(Ensemble):
    """Herniation nets averaged: crops -> their mean [herniation logit, mm] [N, 2].

    The mean logit is a score like any member's; ``meddet calibrate`` fits it afresh."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([net(x) for net in self.members]).mean(dim=0)


#: The share of a disc's best detection score that a slice's detection needs for the call to
#: read it (``analysis.key_members``): fainter boxes on lateral slices are more often a pillar
#: or a foramen than the disc, and the highest logit over them decides the call and its slice.
KEY_FRACTION = 0.5
#: What a checkpoint that stores none (calibrated before 2026-11-30 night) was calibrated under.
UNSTORED_KEY_FRACTION = 0.35
#: Where the herniation crops of a disc are centred (``analysis.crop_anchors``): "slice", on each
#: slice's own box; "disc", on one point for the whole disc, the mean of its boxes' centres
#: weighted by their scores (one box's error no longer moves the crop; the slices still differ).
CROP_ANCHORS = ("slice", "disc")
CROP_ANCHOR = "disc"
#: What a checkpoint that stores none (calibrated before A1, late on 2026-11-30) was calibrated under.
UNSTORED_CROP_ANCHOR = "slice"

LevelNet = DiscNet | LevelEnsemble
HerniationNet = DiscNet | HerniationEnsemble


@dataclass
class DiscModels:
    """The herniation net, the level net, their crop specs and the calibration."""

    herniation: HerniationNet
    level: LevelNet
    herniation_crop: CropSpec = HERNIATION_CROP
    level_crop: CropSpec = LEVEL_CROP
    calibration: Calibration = field(default_factory=Calibration.identity)
    label_threshold_mm: float = 1.5  # a disc is "herniation" in training when it protrudes this far
    locator: LevelLocator | None = None  # where each level is, on the whole neck (``discs.locator``)
    level_fusion: str = "level"  # how the level net's and the locator's views combine (``naming.fuse``)
    #: how the chain is named from the level views (a checkpoint without one: ``UNSTORED_RULE``)
    naming: NamingRule = field(default_factory=NamingRule)
    key_fraction: float = KEY_FRACTION  # which detections of a disc the call reads (``KEY_FRACTION``)
    crop_anchor: str = CROP_ANCHOR  # where a disc's herniation crops are centred (``CROP_ANCHORS``)

    @classmethod
    def new(cls, herniation_crop: CropSpec = HERNIATION_CROP, level_crop: CropSpec = LEVEL_CROP) -> DiscModels:
        return cls(
            DiscNet(herniation_crop.channels, 2),
            DiscNet(level_crop.channels, len(LEVEL_CLASSES)),
            herniation_crop,
            level_crop,
        )

    def nets(self) -> list[nn.Module]:
        return [self.herniation, self.level, *([self.locator] if self.locator is not None else [])]

    def eval(self) -> DiscModels:
        for net in self.nets():
            net.eval()
        return self

    def to(self, device: torch.device | str) -> DiscModels:
        for net in self.nets():
            net.to(device)
        return self

    def with_calibration(self, calibration: Calibration) -> DiscModels:
        return replace(self, calibration=calibration)

    def under_current_rules(self) -> DiscModels:
        """These nets under today's analysis rules (the default naming rule, ``KEY_FRACTION``,
        ``CROP_ANCHOR``): what ``meddet calibrate`` fits under and the checkpoint then stores."""
        return replace(self, naming=NamingRule(), key_fraction=KEY_FRACTION, crop_anchor=CROP_ANCHOR)

    def level_members(self) -> list[DiscNet]:
        """The level net(s): the members of a ``LevelEnsemble``, or the one net."""
        return _members_of(self.level)

    def herniation_members(self) -> list[DiscNet]:
        """The herniation net(s): the members of a ``HerniationEnsemble``, or the one net."""
        return _members_of(self.herniation)

    def with_level_member(self, other: DiscModels) -> DiscModels:
        """These models with ``other``'s level net averaged into theirs (a ``LevelEnsemble``);
        both must read the same level crop."""
        if other.level_crop != self.level_crop:
            raise ValueError(f"level crops differ: {other.level_crop} is not {self.level_crop}")
        return replace(self, level=LevelEnsemble([*self.level_members(), *other.level_members()]).eval())

    def with_herniation_member(self, other: DiscModels) -> DiscModels:
        """These models with ``other``'s herniation net averaged into theirs (a
        ``HerniationEnsemble``; recalibrate it); both must read the same herniation crop."""
        if other.herniation_crop != self.herniation_crop:
            raise ValueError(f"herniation crops differ: {other.herniation_crop} is not {self.herniation_crop}")
        members = [*self.herniation_members(), *other.herniation_members()]
        return replace(self, herniation=HerniationEnsemble(members).eval())

    def to_payload(self, half: bool = True) -> dict[str, Any]:
        """A plain dict (tensors, numbers, strings) for the checkpoint."""

        def state(net: nn.Module) -> dict[str, Tensor]:
            return {
                k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
                for k, v in net.state_dict().items()
            }

        def states(members: list[DiscNet]) -> dict[str, Tensor] | list[dict[str, Tensor]]:
            # one net's state, or a list of them for an ensemble (older readers fail on it)
            return [state(net) for net in members] if len(members) > 1 else state(members[0])

        return {
            "herniation": states(self.herniation_members()),
            "level": states(self.level_members()),
            "widths": list(self.herniation.widths),
            "herniation_crop": self.herniation_crop.to_dict(),
            "level_crop": self.level_crop.to_dict(),
            "level_classes": list(LEVEL_CLASSES),
            "calibration": self.calibration.to_dict(),
            "label_threshold_mm": self.label_threshold_mm,
            **({"locator": state(self.locator), "locator_width": self.locator.width} if self.locator else {}),
            "level_fusion": self.level_fusion,
            **self.rules(),
        }

    def rules(self) -> dict[str, Any]:
        """The analysis rules this second stage was calibrated under, as stored (their keys are
        ``checkpoint.STORED_RULES``, which the version covers)."""
        return {"naming": self.naming.to_dict(), "key_fraction": self.key_fraction, "crop_anchor": self.crop_anchor}

    @classmethod
    def load(cls, path: Path | str) -> DiscModels:
        """A second stage saved as a payload (``best.pt`` of ``meddet train-discs``)."""
        return cls.from_payload(torch.load(path, weights_only=True))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> DiscModels:
        if list(payload["level_classes"]) != list(LEVEL_CLASSES):
            raise ValueError(f"checkpoint: level classes {payload['level_classes']} are not {list(LEVEL_CLASSES)}")
        hc, lc = CropSpec.from_dict(payload["herniation_crop"]), CropSpec.from_dict(payload["level_crop"])
        widths = tuple(payload["widths"])
        hernia_states, level_states = member_states(payload, "herniation"), member_states(payload, "level")
        hernia_nets = [DiscNet(hc.channels, 2, widths) for _ in hernia_states]
        level_nets = [DiscNet(lc.channels, len(LEVEL_CLASSES), widths) for _ in level_states]
        models = cls(
            hernia_nets[0] if len(hernia_nets) == 1 else HerniationEnsemble(hernia_nets),
            level_nets[0] if len(level_nets) == 1 else LevelEnsemble(level_nets),
            hc,
            lc,
            Calibration.from_dict(payload["calibration"]),
            float(payload["label_threshold_mm"]),
        )
        models.level_fusion = str(payload.get("level_fusion", "level"))
        if models.level_fusion not in FUSIONS:
            raise ValueError(f"checkpoint: level fusion {models.level_fusion!r} is not one of {FUSIONS}")
        models.naming = NamingRule.from_dict(payload["naming"]) if "naming" in payload else UNSTORED_RULE
        models.key_fraction = float(payload.get("key_fraction", UNSTORED_KEY_FRACTION))
        if not 0.0 <= models.key_fraction <= 1.0:
            raise ValueError(f"checkpoint: key_fraction {models.key_fraction} is not in 0..1")
        models.crop_anchor = str(payload.get("crop_anchor", UNSTORED_CROP_ANCHOR))
        if models.crop_anchor not in CROP_ANCHORS:
            raise ValueError(f"checkpoint: crop_anchor {models.crop_anchor!r} is not one of {CROP_ANCHORS}")
        if "locator" in payload:
            models.locator = LevelLocator(int(payload["locator_width"]))
        loads: list[tuple[nn.Module, dict[str, Tensor]]] = [*zip(hernia_nets, hernia_states, strict=True)]
        loads += zip(level_nets, level_states, strict=True)
        if models.locator is not None:
            loads.append((models.locator, payload["locator"]))
        for net, state in loads:
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return models.eval()


def _members_of(net: nn.Module) -> list[DiscNet]:
    """An ensemble's members, or the one net."""
    return list(net.members) if isinstance(net, Ensemble) else [net]  # type: ignore[arg-type, list-item]
