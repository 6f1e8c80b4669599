"""The six caption perspectives of DIFFER, in the paper's order (index = position)."""

PERSPECTIVES: tuple[str, ...] = ("biometrics", "hairstyle", "clothing", "pose", "interaction", "environment")
BIOMETRIC = "biometrics"
NON_BIOMETRIC: tuple[str, ...] = PERSPECTIVES[1:]
SUMMARY_PERSPECTIVE = "biometrics_summary"  # per-identity summary features, keyed by pid
