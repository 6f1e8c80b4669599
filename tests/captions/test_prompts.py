"""prompts.yaml: the packaged defaults, prompt_id identity, and one-line errors for bad files."""

from __future__ import annotations

import re

import pytest
import yaml

from captions.prompts import DEFAULT_PROMPTS, load_prompts
from differ_common.errors import ConfigError
from differ_common.perspectives import PERSPECTIVES


def _spec() -> dict:
    return yaml.safe_load(DEFAULT_PROMPTS.read_text())


def _write(tmp_path, spec, name="prompts.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_packaged_prompts_cover_the_six_perspectives_in_order():
    specs = load_prompts()
    assert list(specs) == list(PERSPECTIVES)
    assert [s.index for s in specs.values()] == list(range(6))
    assert [p for p, s in specs.items() if s.biometric] == ["biometrics"]
    for s in specs.values():
        assert re.fullmatch(r"[0-9a-f]{12}", s.prompt_id)
        assert 8 <= s.max_new_tokens <= 64
        assert s.generation["do_sample"] is False and s.generation["num_beams"] == 1
        assert "one short factual sentence" in s.prompt and "clearly visible" in s.prompt
    bio = specs["biometrics"].prompt.lower()
    for trait in ("gender", "age", "height", "build", "skin tone", "change clothes"):
        assert trait in bio
    assert "clothing" in bio  # told NOT to mention it
    assert "hair" in specs["hairstyle"].prompt.lower() and "wearing" in specs["clothing"].prompt.lower()
    assert len({s.prompt_id for s in specs.values()}) == 6


def test_editing_one_prompt_changes_only_its_prompt_id(tmp_path):
    before = load_prompts()
    spec = _spec()
    i = [p["name"] for p in spec["perspectives"]].index("clothing")
    spec["perspectives"][i]["prompt"] += " Name every colour you see."
    after = load_prompts(_write(tmp_path, spec))
    changed = [p for p in PERSPECTIVES if before[p].prompt_id != after[p].prompt_id]
    assert changed == ["clothing"]
    # whitespace-only edits (YAML folding) do not change the identity
    spec = _spec()
    spec["perspectives"][i]["prompt"] = "  " + spec["perspectives"][i]["prompt"].replace(" ", "\n ", 1)
    assert (
        load_prompts(_write(tmp_path, spec, "ws.yaml"))["clothing"].prompt_id == before["clothing"].prompt_id
    )


def test_generation_settings_and_max_tokens_are_part_of_the_prompt_id(tmp_path):
    before = load_prompts()
    spec = _spec()
    spec["perspectives"][3]["max_new_tokens"] += 1
    after = load_prompts(_write(tmp_path, spec))
    assert [p for p in PERSPECTIVES if before[p].prompt_id != after[p].prompt_id] == [PERSPECTIVES[3]]
    spec = _spec()
    spec["generation"]["repetition_penalty"] = 1.2
    after = load_prompts(_write(tmp_path, spec, "gen.yaml"))
    assert all(before[p].prompt_id != after[p].prompt_id for p in PERSPECTIVES)
    assert after["pose"].generate_kwargs()["repetition_penalty"] == 1.2


def _mutate(kind: str) -> dict:
    spec = _spec()
    items = spec["perspectives"]
    if kind == "top-key":
        spec["model"] = "llava"
    elif kind == "item-key":
        items[1]["temperature"] = 0.3
    elif kind == "empty":
        items[2]["prompt"] = "   "
    elif kind == "duplicate":
        items[4]["name"] = "pose"
    elif kind == "unknown":
        items[4]["name"] = "gait"
    elif kind == "no-biometric":
        del items[0]["biometric"]
    elif kind == "missing":
        del items[5]
    elif kind == "gen-key":
        spec["generation"]["beam"] = 3
    elif kind == "tokens":
        items[0]["max_new_tokens"] = 0
    return spec


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("top-key", "unknown key(s) ['model']"),
        ("item-key", "unknown key(s) ['temperature']"),
        ("empty", "empty prompt"),
        ("duplicate", "duplicate perspective 'pose'"),
        ("unknown", "unknown perspective name"),
        ("no-biometric", "missing 'biometric'"),
        ("missing", "missing perspective(s) ['environment']"),
        ("gen-key", "unknown generation setting(s) ['beam']"),
        ("tokens", "max_new_tokens"),
    ],
)
def test_bad_prompts_file_gives_one_line_naming_the_file(tmp_path, kind, needle):
    path = _write(tmp_path, _mutate(kind), f"bad-{kind}.yaml")
    with pytest.raises(ConfigError) as err:
        load_prompts(path)
    msg = str(err.value)
    assert str(path) in msg and needle in msg and "\n" not in msg


def test_unreadable_or_absent_prompts_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("perspectives: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_prompts(bad)
    with pytest.raises(ConfigError, match="prompts file not found"):
        load_prompts(tmp_path / "nope.yaml")
    not_a_map = tmp_path / "list.yaml"
    not_a_map.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_prompts(not_a_map)
