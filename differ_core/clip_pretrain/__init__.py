"""A CLIP-style pre-training on synthetic people: the stand-in for EVA02-CLIP on SynthCC (docs/design.md §9).

``config`` (settings, fingerprint), ``corpus`` (people and full descriptions), ``train`` (open_clip model, loop,
outputs), ``zero_shot`` (retrieval on held-out people).
"""
