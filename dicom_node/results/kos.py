"""Key Object Selection ("Of Interest"): the key slices of the herniations and our result objects.

In IHE AIR terms a manifest: a viewer opening it finds the images that illustrate the findings
and the SR / SEG / GSPS that carry them.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from dicom_node.results.codes import (
    KEY_OBJECT_TITLE,
    MANUFACTURER,
)
from dicom_node.results.common import (
    ResultContext,
    finish,
)


def build_kos(ctx: ResultContext, results: Sequence[Dataset] = ()) -> Dataset:
    """Reference the key slices (every slice with a herniation, else all) and ``results``."""
    key_uids = {f.sop_instance_uid for f in ctx.herniations}
    key_images = [ds for ds in ctx.sources if ds.SOPInstanceUID in key_uids] or list(ctx.sources)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.uid("device"), name=ctx.model_name, manufacturer_name=MANUFACTURER
        ),
    )
    n = len(ctx.herniations)
    content = hd.ko.KeyObjectSelection(
        document_title=KEY_OBJECT_TITLE,
        referenced_objects=[*key_images, *results],
        observer_device_context=device,
        description=f"MedDet: {n} herniation(s); AI result, not for diagnosis"[:1024],
    )
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[*ctx.sources, *results],
        content=content,
        **ctx.identity("kos"),
        series_description="MedDet key images (AI)",
    )
    return finish(kos, ctx, "kos")
