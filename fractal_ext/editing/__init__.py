"""Conditional pixel-by-pixel prediction: inpainting, outpainting, uncropping and class-conditional
editing (a region regenerated under another label). `complete` fills in the unknown pixels of
images; the mask helpers make the usual known-pixel masks. docs/editing.md explains the rules."""
from fractal_ext.editing.complete import complete
from fractal_ext.editing.masks import border_mask, box_mask, centre_crop_mask, lower_half_mask
from fractal_ext.models.known import KnownPixels

__all__ = ["complete", "box_mask", "border_mask", "centre_crop_mask", "lower_half_mask", "KnownPixels"]
