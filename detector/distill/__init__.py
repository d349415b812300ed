"""MedDet distillation: multi-teacher feature alignment (AFA), fusion (LWFF), adversarial
transfer (AATM) and the trainer that ties them to a GFL student. Heavy imports live in the
submodules."""
