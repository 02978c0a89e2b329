"""Synthetic masked faces (the synthesize stage): MaskTheFace-style templates warped onto
unmasked face crops from dlib's 68 landmarks, worn correctly or incorrectly.

landmarks.py   68 points for a crop with a known face box (detector only a check)
mean_shape.py  box-relative mean face shapes for the "box" fallback (mean_shapes.json,
               fitted by scripts/fit_mean_shape.py)
templates.py   masks.cfg anchors, template images, colours and textures
placement.py   six face anchor points, head turn, homography, warp, wear variants
synthesize.py  one face -> masked image + binary mask; the stage's run and metrics
preview.py     the source | synthetic preview grid
"""
