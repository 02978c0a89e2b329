"""The typed params base: unknown keys, types, ranges and choices are refused with the key named."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from typing import Literal

import pytest

from maskpipe.settings import ConfigError, Section, option


@dataclass(frozen=True)
class Inner(Section):
    depth: int = option(2, ge=1)


@dataclass(frozen=True)
class Example(Section):
    padding: float = option(0.1, ge=0, le=2)
    size: int = option(256, ge=8)
    resize: Literal["stretch", "letterbox"] = "stretch"
    enabled: bool = True
    limit: int | None = None
    names: list[str] = option(["a"], choices=["a", "b"])
    box: tuple[int, int] = (1, 2)
    inner: Inner = option(Inner())


def test_defaults_and_values():
    cfg = Example.from_mapping(
        {"padding": 1, "limit": 5, "names": ["b"], "box": [3, 4], "inner": {"depth": 3}}, "crop"
    )
    assert cfg.padding == 1.0 and isinstance(cfg.padding, float)
    assert cfg.limit == 5 and cfg.names == ["b"] and cfg.box == (3, 4) and cfg.inner.depth == 3
    assert Example.from_mapping(None, "crop") == Example()
    with pytest.raises(FrozenInstanceError):
        cfg.size = 3  # type: ignore[misc]


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"crop\.paddng: unknown key \(did you mean 'padding'\?\)"):
        Example.from_mapping({"paddng": 0.2}, "crop")
    with pytest.raises(ConfigError, match=r"crop\.inner\.dpth: unknown key \(did you mean 'depth'"):
        Example.from_mapping({"inner": {"dpth": 1}}, "crop")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("padding", "abc", r"crop\.padding: expected a number, got 'abc' \(a str\)"),
        ("padding", "inf", r"crop\.padding: expected a number"),
        ("padding", float("inf"), r"crop\.padding: expected a finite number"),
        ("padding", float("nan"), r"crop\.padding: expected a finite number"),
        ("padding", 5, r"crop\.padding: must be >= 0 and <= 2, got 5"),
        ("size", 2.5, r"crop\.size: expected an integer"),
        ("size", True, r"crop\.size: expected an integer"),
        ("size", 4, r"crop\.size: must be >= 8"),
        (
            "resize",
            "strech",
            r"crop\.resize: 'strech' is not one of stretch, letterbox \(did you mean 'stretch'\?\)",
        ),
        ("enabled", "yes", r"crop\.enabled: expected true or false"),
        ("limit", "x", r"crop\.limit: expected an integer"),
        ("names", ["c"], r"crop\.names: 'c' is not one of a, b"),
        ("names", "a", r"crop\.names: expected a list"),
        ("box", [1], r"crop\.box: expected 2 items"),
        ("inner", {"depth": 0}, r"crop\.inner\.depth: must be >= 1"),
    ],
)
def test_bad_values_are_named(key, value, message):
    with pytest.raises(ConfigError, match=message):
        Example.from_mapping({key: value}, "crop")


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"crop: expected a mapping"):
        Example.from_mapping([1, 2], "crop")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Renamed(Section):
    moved_keys = {"threshold_percentile": "models.<model>.threshold_percentile"}
    size: int = 1


def test_moved_key_says_where_it_lives_now():
    with pytest.raises(
        ConfigError,
        match=r"^params\.yaml: evaluate\.threshold_percentile: moved to "
        r"models\.<model>\.threshold_percentile$",
    ):
        Renamed.from_mapping({"threshold_percentile": 75}, "evaluate")
    assert Renamed.from_mapping({"size": 3}, "evaluate").size == 3


@dataclass(frozen=True)
class Aliased(Section):
    key_aliases = {"learning_rate": "lr", "gone": "not_a_field"}
    lr: float = 0.1
    scale_range: float = 1.0


def test_a_misspelt_alias_points_at_the_real_key():
    with pytest.raises(ConfigError, match=r"m\.lerning_rate: unknown key \(did you mean 'lr'\?\)"):
        Aliased.from_mapping({"lerning_rate": 0.2}, "m")
    with pytest.raises(ConfigError, match=r"m\.learning_rate: unknown key \(did you mean 'lr'\?\)"):
        Aliased.from_mapping({"learning_rate": 0.2}, "m")
    with pytest.raises(ConfigError, match=r"m\.scale_rang: unknown key \(did you mean 'scale_range'\?\)"):
        Aliased.from_mapping({"scale_rang": 0.2}, "m")
