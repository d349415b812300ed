"""An independent synthetic sagittal cervical spine MR generator, for evaluation only.

Written from first principles of anatomy and MR physics, separately from the training
generator in ``detector.data`` (nothing is shared or imported), so that results on it say
something about images the model never saw. Never use it for training, augmentation or model
selection. See docs/heldout.md.
"""

from detector.heldout.anatomy import DISC_LEVELS, REPORTED_LEVELS
from detector.heldout.study import DiscTruth, HeldoutStudy, make_study, studies, study_seed

__all__ = ["DISC_LEVELS", "REPORTED_LEVELS", "DiscTruth", "HeldoutStudy", "make_study", "studies", "study_seed"]
