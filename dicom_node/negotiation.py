"""Association set-up without re-validating every UID for every association.

pynetdicom deep-copies the server's supported presentation contexts for each new association
(``transport.RequestHandler._create_association``). Each UID in them is a pydicom ``UID``,
which a deep copy re-creates and re-validates by regular expression: for the node's ~60 image
storage classes x 12 transfer syntaxes that was ~40% of an association's set-up CPU (yappi;
about as much as receiving 100 instances through the fast lane). UIDs are immutable strings,
so sharing them between the copies changes nothing; everything else is still copied.
"""

from __future__ import annotations

import copy
from typing import Any


class SharedUIDContexts(list[Any]):
    """A list of presentation contexts whose deep copies share their (immutable) UIDs."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        for context in self:
            for uid in (context._abstract_syntax, *context._transfer_syntax):
                memo[id(uid)] = uid
        return [copy.deepcopy(context, memo) for context in self]
