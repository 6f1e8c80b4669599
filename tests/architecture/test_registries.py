"""Datasets, captioner backends and text encoders each have one registry and one spec parser."""

from __future__ import annotations

import pandas as pd
import pytest

from captions.backends import CAPTIONERS, make_captioner
from captions.features.encoders import ENCODERS, parse_spec
from data_manifests.registry import DATASETS, build_manifest, dataset_info, list_datasets, register_dataset
from differ_common.errors import ConfigError
from differ_common.registry import Registry


def test_built_in_plugins_are_registered():
    assert list_datasets() == ["ccvid", "celeb-light", "custom", "ltcc", "prcc", "synthcc"]
    assert CAPTIONERS.names() == ["attributes", "hf", "vllm"]
    assert ENCODERS.names() == ["hf-clip", "minilm", "open_clip", "sentence-transformers"]
    assert dataset_info("Celeb_ReID_light").name == "celeb-light"  # alias, case and "_" tolerated


def test_one_parser_checks_each_entrys_argument_rule():
    assert parse_spec("open_clip:EVA02-B-16@/ckpt/x.pt") == ("open_clip", "EVA02-B-16@/ckpt/x.pt")
    assert parse_spec("minilm") == ("minilm", "")
    with pytest.raises(ConfigError, match=r"unknown text encoder 'clip'; use hf-clip:<dir> \| minilm"):
        parse_spec("clip:/x")
    with pytest.raises(ConfigError, match=r"captioner 'hf' needs an argument: hf:<local VLM dir>"):
        make_captioner("hf")
    with pytest.raises(ConfigError, match="'minilm' takes no argument"):
        parse_spec("minilm:/x")


def test_a_registered_dataset_is_built_through_the_registry(tmp_path):
    calls = []

    @register_dataset("toy-registry-test", "one CSV")
    def build(root, on_bad_image="error"):
        calls.append((root, on_bad_image))
        return pd.DataFrame({"image_id": ["a"]})

    try:
        assert "toy-registry-test" in list_datasets()
        df = build_manifest("toy-registry-test", tmp_path, on_bad_image="skip")
        assert calls == [(tmp_path, "skip")] and list(df["image_id"]) == ["a"]
        with pytest.raises(ValueError, match="registered twice"):
            register_dataset("toy-registry-test", "again")(build)
    finally:
        DATASETS._entries.pop("toy-registry-test")


def test_registry_usage_lists_argument_forms():
    r = Registry("widget")
    r.add("plain", object())
    r.add("dir", object(), arg="required", arg_help="<dir>")
    r.add("maybe", object(), arg="optional", arg_help="<x>")
    assert r.usage() == "dir:<dir> | maybe[:<x>] | plain"
    assert r.parse("maybe") == (r.get("maybe"), "") and r.parse("maybe:1")[1] == "1"
