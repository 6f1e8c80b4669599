"""Dataset knowledge lives on ``DatasetInfo``: every trait drives behaviour, and no other package tests a name."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from captions.features.interop import summary_pid_column
from captions.targets import caption_target_rows, resolve_mode
from data_manifests.registry import (
    DATASETS,
    ProtocolSpec,
    dataset_info,
    dataset_traits,
    list_datasets,
    register_dataset,
)
from differ_common.errors import ConfigError
from differ_core.config import TrainConfig
from differ_core.evaluation.protocols import dataset_protocols

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ["differ_common", "captions", "differ_core", "flows"]  # every package but data_manifests


@pytest.fixture
def register(monkeypatch):
    """``register(name, **traits)``: a dataset registered for this test only (no code change elsewhere)."""

    def add(name: str, **traits):
        monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
        register_dataset(name, "<test layout>", **traits)(lambda root, **options: pd.DataFrame())
        return dataset_info(name)

    return add


# ------------------------------------------------------------------------------------------- the lookup
def test_lookup_tolerates_case_underscores_and_aliases():
    assert dataset_info("CELEB_LIGHT").name == dataset_info("celeb-reid-light").name == "celeb-light"
    assert dataset_traits("Celeb").name == "celeb-light"


def test_an_unknown_name_is_an_error_naming_the_known_datasets():
    with pytest.raises(ConfigError, match="unknown dataset 'ltc'") as e:
        dataset_info("ltc")
    assert all(name in str(e.value) for name in list_datasets())


def test_a_name_no_adapter_registered_gets_the_custom_traits_under_its_own_name():
    toy, custom = dataset_traits("toy"), dataset_info("custom")
    assert toy.name == "toy"
    assert (toy.protocols, toy.tracklet, toy.published, toy.summary_id_column, toy.generated) == (
        custom.protocols,
        custom.tracklet,
        custom.published,
        custom.summary_id_column,
        custom.generated,
    )


def test_the_built_in_traits():
    info = {name: dataset_info(name) for name in list_datasets()}
    assert {n for n, i in info.items() if i.tracklet} == {"ccvid"}
    assert {n for n, i in info.items() if i.published} == {"ltcc", "prcc", "celeb-light", "ccvid"}
    assert {n for n, i in info.items() if i.generated} == {"synthcc"}
    assert {n: i.summary_id_column for n, i in info.items() if i.summary_id_column != "pid"} == {
        "prcc": "raw_pid"
    }
    required = {n: [p.name for p in i.protocols if p.required] for n, i in info.items()}
    assert required == {
        "ccvid": ["general", "clothes_changing"],
        "celeb-light": ["general"],
        "custom": ["general"],
        "ltcc": ["general", "clothes_changing"],
        "prcc": ["same_clothes", "clothes_changing"],
        "synthcc": ["general", "clothes_changing"],
    }


# ------------------------------------------------------------------------ each trait drives behaviour
def test_tracklet_gives_tracklet_captions_and_tracklet_protocols(register):
    register("my-videos", tracklet=True)
    manifest = pd.DataFrame(
        {"dataset": "my-videos", "track_id": ["t1"] * 4 + ["t2"] * 4, "frame": list(range(8))}
    )
    assert resolve_mode("auto", "my_videos") == "tracklet"
    assert len(caption_target_rows(manifest, "auto")) == 2  # one target per tracklet
    assert all(p.tracklet for p in dataset_protocols("my-videos"))
    register("my-images")
    assert resolve_mode("auto", "my-images") == "frame"
    assert not any(p.tracklet for p in dataset_protocols("my-images"))


def test_protocols_and_which_are_required_come_from_the_registration(register):
    register(
        "two-rooms",
        protocols=(
            ProtocolSpec("changed", "query_diff", mode="clothes_changing", single_shot="required"),
            ProtocolSpec("same", "query_same", mode="same_clothes", required=False, single_shot="none"),
            ProtocolSpec("anyone", ignore_camera=True),
        ),
    )
    protos = dataset_protocols("two-rooms", single_shot=True, trials=3)
    assert [
        (p.name, p.query_split, p.mode, p.required, p.ignore_camera, p.single_shot_trials) for p in protos
    ] == [
        ("changed", "query_diff", "clothes_changing", True, False, 0),
        ("same", "query_same", "same_clothes", False, False, 0),
        ("anyone", "query", "general", True, True, 0),
        ("changed_single_shot", "query_diff", "clothes_changing", True, False, 3),
        ("anyone_single_shot", "query", "general", False, True, 3),
    ]


def test_published_refuses_random_weights(register):
    register("my-benchmark", published=True)
    register("my-data")
    assert (
        "trains my-benchmark from random weights"
        in TrainConfig(data={"dataset": "my-benchmark"}).pretrained_problem()
    )
    assert TrainConfig(data={"dataset": "my-data"}).pretrained_problem() is None


def test_summary_id_column_keys_the_release_summaries(register):
    register("raw-keyed", summary_id_column="raw_pid")
    assert summary_pid_column("raw-keyed") == "raw_pid"
    assert summary_pid_column("toy") == "pid"


def test_generated_datasets_live_in_the_workspace_and_have_attributes(register, tmp_path):
    from captions.attributes_captioner import AttributesCaptioner
    from differ_common.errors import DataError
    from flows.stages.manifest import default_root

    register("my-synth", generated=True)
    assert default_root(str(tmp_path), "my-synth") == str(tmp_path / "data")
    assert default_root(str(tmp_path), "ltcc") is None
    with pytest.raises(DataError, match="attribute table not found"):  # accepted: it looks for the table
        AttributesCaptioner(tmp_path, "my-synth")
    with pytest.raises(ConfigError, match="needs SynthCC's ground-truth attributes"):
        AttributesCaptioner(tmp_path, "ltcc")


# ---------------------------------------------------------------------------- no name tests elsewhere
def _dataset_names() -> set[str]:
    names = set(list_datasets()) | set(DATASETS._aliases)
    return names | {n.replace("-", "_") for n in names}


def _names_in(node: ast.AST, names: set[str]) -> list[str]:
    """Dataset names that ``node`` (a constant or a literal collection of constants) spells."""
    elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [
        e.value
        for e in elts
        if isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value.lower() in names
    ]


def name_tests(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every comparison with a dataset name and every literal collection of dataset names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                found += [(node.lineno, n) for n in _names_in(side, names)]
        elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue):
            found += [(node.pattern.lineno, n) for n in _names_in(node.pattern.value, names)]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and _names_in(node, names):
            found += [(node.lineno, n) for n in _names_in(node, names)]
        elif (
            isinstance(node, ast.Dict)
            and node.keys
            and all(k is not None and _names_in(k, names) for k in node.keys)
        ):
            # a per-dataset lookup table ({"prcc": "raw_pid"}); a record's "synthcc" field is not one
            found += [(node.lineno, n) for k in node.keys for n in _names_in(k, names)]
    return sorted(set(found))


# name-keyed tables of what to launch, not knowledge about a dataset
ALLOWED = {"flows/deployments.py"}


def test_no_module_outside_data_manifests_tests_a_dataset_name():
    names = _dataset_names()
    hits = [
        f"{f.relative_to(ROOT)}:{line}: {name!r}"
        for pkg in OUTSIDE
        for f in sorted((ROOT / pkg).rglob("*.py"))
        if str(f.relative_to(ROOT)) not in ALLOWED
        for line, name in name_tests(f.read_text(), names)
    ]
    assert not hits, (
        "ask data_manifests.registry.dataset_traits(name) instead of testing a name:\n" + "\n".join(hits)
    )


@pytest.mark.parametrize(
    "code",
    [
        'if cfg.dataset == "synthcc": pass',
        'x = "ltcc" != d',
        'ok = ds in ("ltcc", "prcc")',
        "TRACKLET = ('ccvid',)",
        'COLUMN = {"prcc": "raw_pid"}.get(ds, "pid")',
        'match ds:\n    case "celeb_light": pass',
    ],
)
def test_the_scan_sees_each_kind_of_name_test(code):
    assert name_tests(code, _dataset_names())
    assert not name_tests('ws.manifest("synthcc"); x = d == "query"', _dataset_names())
