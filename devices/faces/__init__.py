"""Face verification done by the backend: dlib's face model, quality checks, challenges,
replay detection and the check-in verdict.

- `model`: the dlib detector, 68-point landmarks and ResNet embedding, loaded once per
  process from the files the `face-recognition-models` package ships (no download).
- `analysis`: pure functions on numpy arrays and landmark points (quality, pose, eye
  openness, challenge detection, perceptual hash, match score, verdict).
- `images`: decoding frames and photos (Pillow), size limits.
- `verify`: the check-in verification and the enrolment assessment, model + analysis.
"""
