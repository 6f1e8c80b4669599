"""The shared foundation below the four stage packages: errors, atomic io, the workspace layout, fingerprints,
device choice and the perspective names. It imports nothing of the project."""
