"""MicroscopyGAN (multi-defect restoration): stage 1's CIN-GAN, which learns to add defects (per defect type)
to clean images, and stage 2's training pairs (the restorer itself is trained by the paired workflow's
trainer, ``scripts.paired.trainer.PairedGANTrainer``)."""

from scripts import lazy_submodules

__getattr__ = lazy_submodules(__name__)
