"""Where training, validation, evaluation and extraction read decoded images from (docs/design.md §10).

Every source answers ``source[idx]`` (a slice, a list, an array or a tensor of rows) with a ``torch.uint8
[B, 3, H, W]`` batch holding the bytes :func:`differ_core.decode.decode_image` gives, so the path chosen never
changes what a model sees:

* :class:`ArrayImages` over the shared memory-mapped cache (:mod:`differ_core.image_cache`): rows gathered per
  batch, pages shared by every rank and run on the machine; or over an array decoded into this process
  (``memory``, the former path);
* :class:`DiskImages`: decoded from the files per batch, by ``num_workers`` DataLoader worker processes during
  training (the fallback when the cache would not fit).

``data.image_cache`` picks one (:func:`open_images`): ``auto`` (default) the cache when it fits under
``data.image_cache_max_gb`` and the free disk, else the disk path, said in one line; ``disk`` the cache or a
ConfigError; ``memory`` decode into each process; ``off`` the disk path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from differ_common.errors import ConfigError
from differ_core.decode import decode_array, decode_image

CACHE_MODES = ("auto", "disk", "memory", "off")


def _rows(idx: Any, n: int) -> np.ndarray:
    """Row numbers ``int64 [B]`` of a slice, list, array or tensor index."""
    if isinstance(idx, slice):
        return np.arange(n, dtype=np.int64)[idx]
    if hasattr(idx, "detach"):
        idx = idx.detach().cpu().numpy()
    rows = np.asarray(idx, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < -n or rows.max() >= n):
        raise IndexError(f"image rows {rows.min()}..{rows.max()} outside 0..{n - 1}")
    return rows


class ImageSource:
    """Decoded images by row: ``len``, ``shape``, ``source[idx]``, ``subset(rows)``, ``batches(batch_sampler)``."""

    kind = "?"
    size: tuple[int, int]

    def __init__(self, n: int, rows: np.ndarray | None) -> None:
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._n = n if rows is None else len(self.rows)

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self._n, 3, self.size[0], self.size[1])

    def _absolute(self, idx: Any) -> np.ndarray:
        rows = _rows(idx, self._n)
        return rows if self.rows is None else self.rows[rows]

    def _take(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, idx: Any):
        import torch

        return torch.from_numpy(self._take(self._absolute(idx)))

    def subset(self, rows: Any) -> ImageSource:
        """A view of some rows (no image is copied)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.rows = self._absolute(rows)
        view._n = len(view.rows)
        return view

    def batches(self, batch_sampler: Iterable[list[int]]) -> Iterator[tuple[list[int], Any]]:
        """``(rows, images)`` per batch of ``batch_sampler``, in order."""
        for idx in batch_sampler:
            yield idx, self[idx]


class ArrayImages(ImageSource):
    """Rows of a ``uint8 [N, 3, H, W]`` array: the shared read-only cache map (``mapped``) or process memory."""

    def __init__(self, array: np.ndarray, kind: str, rows: np.ndarray | None = None) -> None:
        super().__init__(len(array), rows)
        self.array, self.kind = array, kind
        self.size = (int(array.shape[2]), int(array.shape[3]))

    def _take(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.array[rows])  # a gather: a fresh, writable array of the batch only


class _Decode:
    """A map-style dataset for the DataLoader: ``(row, uint8 [3, H, W])`` of one file."""

    def __init__(self, paths: list[str], rows: np.ndarray | None, size: tuple[int, int]) -> None:
        self.paths, self.rows, self.size = paths, rows, size

    def __len__(self) -> int:
        return len(self.paths) if self.rows is None else len(self.rows)

    def __getitem__(self, i: int):
        import torch

        row = int(i) if self.rows is None else int(self.rows[i])
        return int(i), torch.from_numpy(np.ascontiguousarray(decode_image(self.paths[row], self.size)))


def _collate(items: list[tuple[int, Any]]) -> tuple[list[int], Any]:
    import torch

    return [i for i, _ in items], torch.stack([x for _, x in items])


class DiskImages(ImageSource):
    """Images decoded from their files per batch (threads; DataLoader worker processes in :meth:`batches`)."""

    kind = "disk"

    def __init__(
        self, paths: list[str], size: tuple[int, int], threads: int = 4, num_workers: int = 2,
        rows: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        super().__init__(len(paths), rows)
        self.paths, self.size = list(paths), (int(size[0]), int(size[1]))
        self.threads, self.num_workers = int(threads), int(num_workers)

    def _take(self, rows: np.ndarray) -> np.ndarray:
        return decode_array([self.paths[r] for r in rows.tolist()], self.size, self.threads)

    def batches(self, batch_sampler: Iterable[list[int]]) -> Iterator[tuple[list[int], Any]]:
        if self.num_workers <= 0:
            yield from super().batches(batch_sampler)
            return
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(
            _Decode(self.paths, self.rows, self.size), batch_sampler=batch_sampler, num_workers=self.num_workers,
            collate_fn=_collate, generator=torch.Generator(),  # the global RNG is left alone
        )  # fmt: skip
        yield from loader


def open_images(
    workdir: str | os.PathLike | None,
    name: str,
    paths: list[str],
    image_ids: list[str],
    size: tuple[int, int],
    *,
    mode: str = "auto",
    max_gb: float = 64.0,
    threads: int = 4,
    num_workers: int = 2,
    log: Callable[[str], None] = print,
) -> ImageSource:
    """The image source ``data.image_cache`` = ``mode`` asks for (see the module doc) for ``paths`` at ``size``."""
    from differ_common.shared_array import header_path
    from differ_core import image_cache as ic

    if mode not in CACHE_MODES:
        raise ConfigError(f"data.image_cache: {mode!r} is not one of {', '.join(CACHE_MODES)}")
    size = (int(size[0]), int(size[1]))
    if mode == "off":
        return DiskImages(paths, size, threads, num_workers)
    if mode == "memory":
        log(f"decoding {len(paths)} images at {size[0]}x{size[1]} into this process's memory")
        return ArrayImages(decode_array(paths, size, threads), "memory")
    need = ic.cache_bytes(len(paths), size)
    key = ic.image_key(paths, size)
    path = ic.cache_file(workdir, name, size, key)
    why = None
    if need > max_gb * 2**30:
        why = f"over data.image_cache_max_gb={max_gb:g}"
    elif not header_path(path).exists() and need + ic.FREE_DISK_MARGIN > (free := ic.free_bytes(path.parent)):
        why = f"more than the {free / 2**30:.2f} GB free at {path.parent}"
    if why is not None:
        msg = f"the image cache of {len(paths)} images at {size[0]}x{size[1]} needs {need / 2**30:.2f} GB, {why}"
        if mode == "disk":
            raise ConfigError(
                f"data.image_cache=disk: {msg}; raise the limit, free disk or set data.image_cache=auto"
            )
        log(
            f"{msg}: decoding from disk per batch instead ({num_workers} DataLoader worker(s), data.num_workers)"
        )
        return DiskImages(paths, size, threads, num_workers)
    mm = ic.open_image_cache(workdir, name, paths, image_ids, size, threads, log, key=key)
    return ArrayImages(mm, "mapped")


def cached_source(
    data_cfg: Any,
    workdir: str | os.PathLike | None,
    name: str,
    paths: list[str],
    image_ids: list[str],
    size: tuple[int, int],
    log: Callable[[str], None] = print,
) -> ImageSource | None:
    """For evaluation and extraction: the shared cache when ``data_cfg.image_cache`` is ``auto``/``disk`` and it
    fits, else None (the caller decodes per batch: evaluation never holds all images)."""
    if workdir is None or data_cfg.image_cache not in ("auto", "disk") or not paths:
        return None
    src = open_images(
        workdir, name, paths, image_ids, size, mode=data_cfg.image_cache, max_gb=data_cfg.image_cache_max_gb,
        threads=data_cfg.decode_threads, num_workers=0, log=log,
    )  # fmt: skip
    return src if src.kind == "mapped" else None
