"""Synthetic series for the fault suite, each with its own distinctive patient name and ID.

Every name starts with :data:`FAMILY` and every ID with ``QXF<run token>``, strings that occur
nowhere else, so a grep of the logs for them finds patient data and nothing else. Pixels come
from a small pool of ``meddet synth`` phantoms (``dicom_node.synth``); UIDs and patients are
new per series.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicom_node.synth import TRANSFER_SYNTAXES, save, study_datasets, synth_uid

FAMILY = "QXFAULT"
#: what the pynetdicom senders rotate through (storescu sends explicit VR little endian)
SCU_SYNTAXES = ("explicit", "implicit", "deflate", "rle", "jpeg-ls")


@dataclass(frozen=True)
class SeriesFiles:
    """One series on disk, ready to send."""

    study_uid: str
    series_uid: str
    patient_name: str
    patient_id: str
    syntax: str
    files: tuple[Path, ...]
    sop_uids: tuple[str, ...]


class Generator:
    """Writes series under ``folder``; remembers every patient name and ID it used."""

    def __init__(self, folder: Path, slices: int = 5, size: int = 128, pool: int = 4, seed: int = 0) -> None:
        from detector.data.synthetic import make_study

        self.folder = folder
        self.token = secrets.token_hex(3).upper()  # new per run: old logs never match
        rng = np.random.default_rng(seed)
        self._pool = [make_study(rng, n_slices=slices, size=size) for _ in range(pool)]
        self._count = 0
        self._lock = threading.RLock()  # phases run on their own threads
        self.names: list[str] = []
        self.ids: list[str] = []

    @property
    def phi_tokens(self) -> list[str]:
        """Strings that must never appear in a log: the family name, the ID prefix, each
        full name and ID (the ``^`` of a name may be rendered as a space)."""
        every = [FAMILY, f"QXF{self.token}", *self.names, *self.ids]
        return sorted({*every, *(name.replace("^", " ") for name in self.names)})

    def patient(self) -> tuple[str, str, int]:
        """A fresh (name, id, number); the given name carries a non-ASCII letter now and then."""
        with self._lock:
            self._count += 1
            n = self._count
            given = f"{self.token}{n:04d}" + ("\u00dc" if n % 3 == 0 else "")
            name, pid = f"{FAMILY}^{given}", f"QXF{self.token}-{n:04d}"
            self.names.append(name)
            self.ids.append(pid)
            return name, pid, n

    def series(self, label: str, syntax: str = "explicit") -> SeriesFiles:
        """One new series (``label`` names its folder; UIDs are derived from it and the run)."""
        name, pid, n = self.patient()
        study = self._pool[n % len(self._pool)]
        datasets = study_datasets(study, key=("faults", self.token, label), number=n, patient_id=pid)
        folder = self.folder / label
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for k, ds in enumerate(datasets):
            ds.PatientName = name
            ds.OtherPatientIDs = pid
            path = folder / f"IM{k + 1:04d}.dcm"
            save(ds, path, TRANSFER_SYNTAXES[syntax])
            files.append(path)
        first = datasets[0]
        return SeriesFiles(
            str(first.StudyInstanceUID),
            str(first.SeriesInstanceUID),
            name,
            pid,
            syntax,
            tuple(files),
            tuple(str(ds.SOPInstanceUID) for ds in datasets),
        )

    def for_senders(self, phase: str, senders: int, per_sender: int, dcmtk_every: int = 4) -> list[list[SeriesFiles]]:
        """``per_sender`` series for each of ``senders``; sender i is dcmtk when i % dcmtk_every
        == dcmtk_every - 1 (or the last sender when there are fewer), which sends explicit VR."""
        plan = []
        for i in range(senders):
            dcmtk = is_dcmtk(i, senders, dcmtk_every)
            plan.append(
                [
                    self.series(f"{phase}-s{i}-{j}", "explicit" if dcmtk else SCU_SYNTAXES[(i + j) % len(SCU_SYNTAXES)])
                    for j in range(per_sender)
                ]
            )
        return plan


def is_dcmtk(index: int, senders: int, every: int = 4) -> bool:
    """Which senders are dcmtk ``storescu`` (at least one: the last, with fewer than ``every``)."""
    return index % every == every - 1 or (senders < every and index == senders - 1)


def unique_uid(*parts: object) -> str:
    """A UID for fuzzed instances (same scheme as the synthetic series)."""
    return synth_uid("faults-fuzz", *parts)
