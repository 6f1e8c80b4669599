"""The pipeline's stages, one file each: its Prefect task(s), its step (what the flows call), its cache key and
the check that its output is still on disk.

``pretrain`` · ``manifest`` · ``caption`` · ``summarize`` · ``encode`` · ``train`` · ``evaluate``; ``base``: the
task decorator, cache policy and tags every stage uses; ``code``: the fingerprint of the project source a stage
runs (part of every cache key); ``context``: what one step hands the next (``Context``).

"Why did this stage rerun?": its file's ``*_task`` parameters, the ``code`` fingerprint of its ``CODE`` modules,
and its ``*_ok`` output check.
"""
