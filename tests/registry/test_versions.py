"""Version order and version tags (cl.versions), without MLflow: the tags the learner and the
retrain wrote before VersionTags, string for string, and errors that name the tag."""

from __future__ import annotations

import json
import random

import pytest

from cl import registry
from cl.serving.adapter_cache import BASE_VERSION
from cl.versions import VersionTagError, VersionTags, is_newer, version_order


def test_one_order_for_every_version_name():
    names = ["10", "2", "base", "1", "v7"]
    assert sorted(names, key=version_order) == ["base", "1", "2", "10", "v7"]
    shuffled = [str(n) for n in range(1, 30)] + [BASE_VERSION]
    random.Random(0).shuffle(shuffled)
    assert sorted(shuffled, key=version_order) == [BASE_VERSION] + [str(n) for n in range(1, 30)]


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        ("10", "9", True),
        ("9", "10", False),
        ("7", "7", False),
        ("1", "base", True),
        ("base", "1", False),
        ("base", "base", False),
        ("v7", "base", True),  # any name is newer than base ...
        ("v7", "3", False),  # ... but never than a registered number
        ("3", "v7", False),
    ],
)
def test_is_newer(a, b, newer):
    assert is_newer(a, b) is newer


def test_the_registry_reexports_the_one_helper():
    assert registry.version_order is version_order and registry.is_newer is is_newer
    assert registry.VersionTags is VersionTags and registry.BASE_VERSION == BASE_VERSION == "base"


def test_the_learners_tags_are_the_strings_it_wrote_before():
    positions = {"cl.requests:0": 40, "cl.feedback:1": 12}
    old = {
        "base_version": "seed-0",
        "parent_version": "",
        "kafka_offsets": json.dumps(positions, sort_keys=True),
        "events_seen": str(400),
        "learner_workers": str(2),
        "source": "online",
        "reason": "periodic",
    }
    tags = VersionTags(
        base_version="seed-0",
        parent_version="",
        kafka_offsets=positions,
        events_seen=400,
        learner_workers=2,
        source="online",
        reason="periodic",
    )
    assert tags.to_tags() == old
    assert VersionTags.from_tags(old) == tags


def test_the_retrains_tags_are_the_strings_it_wrote_before():
    old = {
        "base_version": "seed-0",
        "parent_version": "7",
        "source": "retrain",
        "events_seen": "1200",
        "reason": "offline retrain",
        "since": "2026-11-01T00:00:00+00:00",
        "until": "",
        "eval_accuracy": f"{0.81254:.4f}",
    }
    tags = VersionTags(
        base_version="seed-0",
        parent_version="7",
        source="retrain",
        events_seen=1200,
        reason="offline retrain",
        since="2026-11-01T00:00:00+00:00",
        until="",
        eval_accuracy=0.81254,
    )
    assert tags.to_tags() == old
    assert VersionTags.from_tags(old).to_tags() == old


def test_unknown_tags_are_kept_and_unset_ones_not_written():
    tags = VersionTags.from_tags({"owner": "ana", "adapter_sha256": "ab" * 32})
    assert tags.other == {"owner": "ana"} and tags.adapter_sha256 == "ab" * 32 and tags.events_seen is None
    assert tags.to_tags() == {"adapter_sha256": "ab" * 32, "owner": "ana"}
    assert VersionTags().to_tags() == {} and VersionTags.from_tags(None) == VersionTags()


def test_the_source_line_counts_untagged_versions_as_online():
    assert VersionTags().line == "online"
    assert VersionTags(source="retrain").line == "retrain"


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({"events_seen": "forty"}, "'events_seen'"),
        ({"events_seen": "-3"}, "'events_seen'"),
        ({"learner_workers": "2.0"}, "'learner_workers'"),
        ({"kafka_offsets": "{not json"}, "'kafka_offsets'"),
        ({"kafka_offsets": '{"cl.feedback:0": "12"}'}, "'kafka_offsets'"),
        ({"eval_accuracy": "high"}, "'eval_accuracy'"),
    ],
)
def test_a_tag_that_does_not_parse_is_named_with_its_version(tags, named):
    with pytest.raises(VersionTagError, match=f"^version 7: tag {named} ") as info:
        VersionTags.from_tags(tags, version="7")
    assert "delete the tag" in str(info.value)


def test_building_tags_of_the_wrong_kind_is_refused():
    with pytest.raises(VersionTagError, match="events_seen"):
        VersionTags(events_seen="40")  # type: ignore[arg-type]
    with pytest.raises(VersionTagError, match="kafka_offsets"):
        VersionTags(kafka_offsets={"cl.feedback:0": "12"})  # type: ignore[dict-item]
    with pytest.raises(VersionTagError, match="set those as fields"):
        VersionTags(other={"reason": "x"})


def test_version_info_reads_its_tags():
    info = registry.VersionInfo("5", {"events_seen": "25", "base_version": "seed-0"}, (), 0, None)
    assert info.version_tags.events_seen == 25 and info.version_tags.base_version == "seed-0"
