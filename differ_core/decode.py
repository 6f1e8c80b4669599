"""Decoding images at the training size: PIL, RGB, bilinear resize, ``uint8 [3, H, W]`` (the one resize policy)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from differ_common.errors import DataError

# what the bytes of a decoded image depend on besides the file and the size; part of the image cache key
RESIZE_POLICY = "pil-rgb-bilinear-chw-uint8"


def decode_image(path: str, size: tuple[int, int]) -> np.ndarray:
    """One image as ``uint8 [3, H, W]`` resized (bilinear) to ``size = (H, W)``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot decode image ({exc}); fix or remove it and rebuild the manifest"
        ) from None
    return arr.transpose(2, 0, 1)


def decode_array(paths: list[str], size: tuple[int, int], threads: int = 4) -> np.ndarray:
    """All ``paths`` decoded into ``uint8 [N, 3, H, W]`` (PIL releases the GIL: threads help)."""
    out = np.empty((len(paths), 3, size[0], size[1]), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = decode_image(paths[i], size)

    if threads > 1 and len(paths) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(len(paths))))
    else:
        for i in range(len(paths)):
            one(i)
    return out


def decode_images(paths: list[str], size: tuple[int, int], threads: int = 4):
    """All ``paths`` decoded once into a ``torch.uint8 [N, 3, H, W]`` tensor."""
    import torch

    return torch.from_numpy(decode_array(paths, size, threads))


def decode_blocks(
    paths: list[str], size: tuple[int, int], threads: int = 4, block: int = 256
) -> Iterator[np.ndarray]:
    """``paths`` decoded ``block`` images at a time, in order (memory: one block)."""
    for s in range(0, len(paths), block):
        yield decode_array(paths[s : s + block], size, threads)
