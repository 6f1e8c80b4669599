"""SynthCC: a procedural clothes-changing re-id dataset, deterministic per seed (docs/design.md §9).

``differ manifest synthcc --root R [--seed S] [--size tiny|small|default] [--set knob=value ...]`` writes
``R/SynthCC/{train,query,test}/<pid>_<outfit>_c<cam>_<idx>.png`` (LTCC's layout and names), the ground-truth
attribute table (``W/manifests/synthcc.attributes.parquet``, one row per image) and the manifest, parsed from
the file names exactly like LTCC.

What it models, and why it is hard in the right way:

- identity traits that persist: gender presentation (shoulder/hip silhouette), age (head size, stoop, grey hair
  more likely), height (figure size within a camera), build (shoulder and waist width), skin tone, head shape,
  hair colour. Every identity gets a distinct combination of trait words plus continuous jitter, so a model
  that ignores clothes can still tell identities apart, but the cues are small: a head, a skin patch, a
  silhouette;
- clothing, the most salient cue: large top and bottom areas in saturated colours with patterns (stripes,
  checks, dots, two-tone), sleeves, trousers/shorts/skirt, shoes, bag. Each identity has several outfits whose
  top colour and (bottom colour, type) all differ, and the palette is shared by everyone, so other identities
  wear the query's clothes: a model that leans on clothes fails the clothes-changing protocol;
- hairstyle that changes at a new outfit with probability ``hairstyle_change_prob`` (hair colour persists);
- per-image pose: direction (front, back, left, right), stride, arm swing; optional hand-held props;
- per-camera environment: background texture, lighting gain, blur, scale (far cameras are also low-res).

Splits (like LTCC): identities 1..num_train_ids are train; the others are test. Each outfit is seen by
``cameras_per_outfit`` cameras; for a test outfit, ``queries_per_outfit`` images (one per distinct camera) are
queries and the rest gallery, so every query has same-clothes matches in another camera and clothes-changing
matches (the identity's other outfits).

Knobs (``SynthConfig``, data_manifests/synthcc/config.py; sizes ``tiny`` 168 images, ``small`` 1,080,
``default`` 3,600 at 128x64):

============================  ==========================================================================
num_train_ids / num_test_ids   identities per split (``num_ids`` sets both, 2:1)
outfits_per_id                 outfits (sessions) per identity, >= 2
images_per_outfit              images of an identity in one outfit
num_cameras                    cameras, each with its own environment
cameras_per_outfit             cameras that see one outfit
queries_per_outfit             query images per test outfit (one per camera, < cameras_per_outfit)
img_height / img_width         output size (drawn at 2x and box-downsampled)
identity_cue_strength          spread of identity traits around the population mean (0 = everyone alike)
identity_detail                each identity's own skin, hair and body spread within its trait words (default 3)
clothing_saliency              clothing colour saturation/contrast (0 = all grey clothes)
hairstyle_change_prob          P(new hairstyle) at each new outfit
prop_prob                      P(a hand-held prop) per image
noise_std                      Gaussian pixel noise (0-255)
blur_scale                     multiplies each camera's blur radius
============================  ==========================================================================

A folder generated with the same generator version, knobs and seed is reused; anything else regenerates it
atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

from differ_common.lazy import lazy_getattr

_EXPORTS = {
    "SynthConfig": "data_manifests.synthcc.config",
    "SIZES": "data_manifests.synthcc.config",
    "resolve_config": "data_manifests.synthcc.config",
    "ATTRIBUTE_COLUMNS": "data_manifests.synthcc.attributes",
    "generate": "data_manifests.synthcc.generator",
    "load_attributes": "data_manifests.synthcc.generator",
    "build": "data_manifests.synthcc.dataset",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
