"""ONNX export of the inference model: ``(images [B, 3, H, W] float32, camids [B] int64) -> features [B, F]``.

    python -m differ_core.export_onnx W/runs/r/checkpoints/best.pt out.onnx [--opset 17]

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which needs only the ``onnx``
package (the dynamo exporter also needs ``onnxscript``). The batch dimension is dynamic. Inputs are normalised
images at the checkpoint's ``img_size`` (its mean/std are stored in the model's metadata properties).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from differ_common.errors import DifferError


def _wrapper(model: Any):
    import torch

    class InferenceModel(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
            f = self.m(images, camids)
            if getattr(self.m, "camera_embed", None) is None:  # keep the camids input in the graph (unused)
                f = f + 0 * camids.unsqueeze(1).to(f.dtype)
            return f

    return InferenceModel(model).eval()


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17, batch_size: int = 2) -> Path:
    """Write the inference model of ``checkpoint`` to ``out`` (ONNX, dynamic batch); returns ``out``."""
    import torch

    from differ_common.io import atomic_path
    from differ_core.model import load_model_for_inference

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise DifferError("ONNX export needs the onnx package: pip install 'differ[onnx]'") from None
    model, _cfg, info = load_model_for_inference(checkpoint, map_location="cpu")
    h, w = info["img_size"]
    images = torch.randn(batch_size, 3, int(h), int(w))
    camids = torch.zeros(batch_size, dtype=torch.long)
    wrapped = _wrapper(model)
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the camera-id range check (a constant here)
        torch.onnx.export(
            wrapped,
            (images, camids),
            str(tmp),
            input_names=["images", "camids"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "camids": {0: "batch"}, "features": {0: "batch"}},
            opset_version=int(opset),
            dynamo=False,
        )
        import onnx

        proto = onnx.load(str(tmp))
        meta = {"img_size": [int(h), int(w)], "mean": list(info["mean"]), "std": list(info["std"]),
                "num_cameras": info.get("num_cameras"), "checkpoint": str(checkpoint)}  # fmt: skip
        for k, v in meta.items():
            p = proto.metadata_props.add()
            p.key, p.value = k, json.dumps(v)
        onnx.save(proto, str(tmp))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m differ_core.export_onnx", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args(argv)
    try:
        print(export_onnx(a.checkpoint, a.out, opset=a.opset))
    except DifferError as exc:
        print(f"export_onnx: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
