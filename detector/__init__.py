"""The learned, advisory half: a detector of generated images.

Modules: `model` (networks), `features` (input transform, batched forward pass),
`transforms` (harmonisation, augmentation, evaluation conditions), `data` (labelled sets,
families, splits), `train`, `calibrate`, `metrics`, `eval` (leave-one-family-out),
`crops` (keyed crop draws), `batching` (micro-batching queue), `registry` (named models),
`weights` (safetensors with metadata), `infer` (`Detector`, `DetectorReport`), `cli`.

Importing this package does not import torch; its submodules need the ``detector``
extra (torch, safetensors). See docs/detector.md.
"""
