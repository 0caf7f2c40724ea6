"""`cl.serving.profiling` and the `cl profile` / `cl bench` commands, on the tiny model (no wall-clock bounds)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import cl.model.lora
from cl.cli import build_parser, main
from cl.model import PRESETS, ModelConfig
from cl.serving.profiling import Measure, ProfileRow, mixed_adapter_ids, profile_model

TINY = ModelConfig.preset("tiny")
FAST = dict(seq_len=6, new_tokens=3, iters=4, warmup=1, device="cpu")


@pytest.fixture(scope="module")
def rows() -> list[ProfileRow]:
    return profile_model(TINY, [1, 3], **FAST)


def test_rows_have_every_field_per_batch_size(rows):
    assert [r.batch_size for r in rows] == [1, 3]
    for r in rows:
        assert (r.seq_len, r.new_tokens, r.iters, r.warmup, r.adapters, r.device) == (6, 3, 4, 1, 0, "cpu")
        assert r.parameters > 0 and r.threads >= 1 and "RSS" in r.memory
        for m in (r.forward, r.generate):
            assert {f.name for f in dataclasses.fields(Measure)} == set(dataclasses.asdict(m))
            assert all(math.isfinite(v) for v in dataclasses.asdict(m).values())
            assert m.p50_ms > 0 and m.mean_ms > 0 and m.peak_memory_mb >= 0
    assert set(rows[0].to_dict()) == {f.name for f in dataclasses.fields(ProfileRow)}


def test_percentiles_are_ordered(rows):
    for r in rows:
        for m in (r.forward, r.generate):
            assert m.p50_ms <= m.p95_ms <= m.p99_ms


def test_throughput_is_batch_times_tokens_over_the_measured_time(rows):
    for r in rows:
        fwd_s, gen_s = r.forward.mean_ms / 1000, r.generate.mean_ms / 1000
        assert r.forward.tokens_per_s == pytest.approx(r.batch_size * r.seq_len / fwd_s)
        assert r.forward.rows_per_s == pytest.approx(r.batch_size / fwd_s)
        assert r.generate.tokens_per_s == pytest.approx(r.batch_size * r.new_tokens / gen_s)
        assert r.generate.rows_per_s == pytest.approx(r.batch_size / gen_s)


def _spy_on_lora(monkeypatch) -> list[tuple[set[int], torch.Tensor]]:
    """Record the adapter ids and B bank of every multi-adapter LoRA call the model makes."""
    calls, real = [], cl.model.lora.apply_lora

    def spy(x, a, b, ids, scale, base=None):
        calls.append((set(ids.tolist()), b))
        return real(x, a, b, ids, scale, base=base)

    monkeypatch.setattr(cl.model.lora, "apply_lora", spy)
    return calls


def test_two_adapters_are_mixed_in_one_batch_through_the_lora_path(monkeypatch):
    calls = _spy_on_lora(monkeypatch)
    (row,) = profile_model(TINY, [4], adapters=2, **FAST)
    assert row.adapters == 2
    assert calls and all(ids == {0, 1} for ids, _ in calls)  # both adapters in every call, no base rows
    assert all(b[0].abs().sum() > 0 and b[1].abs().sum() > 0 for _, b in calls)  # trained-like, not zero deltas


def test_no_adapters_sends_every_row_to_the_base(monkeypatch):
    calls = _spy_on_lora(monkeypatch)
    (row,) = profile_model(TINY, [3], adapters=0, **FAST)
    assert row.adapters == 0 and calls and all(ids == {-1} for ids, _ in calls)


def test_mixed_adapter_ids_use_every_slot_evenly():
    ids = mixed_adapter_ids(7, [2, 0, 1], seed=3)
    assert sorted(ids.tolist()) == [0, 0, 1, 1, 2, 2, 2]
    assert torch.equal(ids, mixed_adapter_ids(7, [2, 0, 1], seed=3))


def test_bad_arguments_are_reported_together_with_the_fix():
    with pytest.raises(ValueError) as e:
        profile_model(TINY, [0], seq_len=200, iters=0, device="tpu")
    message = str(e.value)
    assert "batch size=0" in message and "iters=0" in message and "device='tpu'" in message
    with pytest.raises(ValueError, match="seq_len <= 127"):
        profile_model(TINY, [1], seq_len=200, device="cpu")


def test_cl_profile_json_has_one_row_per_batch_size(capsys):
    code = main(["profile", "--preset", "tiny", "--batch-size", "1,2", "--iters", "3", "--warmup", "1", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = json.loads(out.out)
    assert [r["batch_size"] for r in rows] == [1, 2]
    assert all(r["preset"] == "tiny" and r["forward"]["p50_ms"] > 0 and r["generate"]["tokens_per_s"] > 0 for r in rows)


def test_cl_profile_text_table_and_progress_on_stderr(capsys):
    code = main(
        [
            "profile",
            "--preset",
            "tiny",
            "--batch-size",
            "2",
            "--seq-len",
            "4",
            "--new-tokens",
            "2",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--adapters",
            "2",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "p50 / p95 / p99 ms" in out.out and "RSS" in out.out
    assert out.err.startswith("cl profile: preset tiny on cpu")


def test_cl_profile_batch_sizes_repeat_or_comma_and_bad_ones_are_refused(capsys):
    args = build_parser().parse_args(["profile", "--batch-size", "1", "--batch-size", "8,32"])
    assert [n for group in args.batch_size for n in group] == [1, 8, 32]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["profile", "--batch-size", "8,x"])
    assert "'8,x' is not a list of batch sizes" in capsys.readouterr().err


def test_cl_profile_unknown_preset_names_the_known_ones(capsys):
    assert main(["profile", "--preset", "huge", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "preset='huge' is unknown" in err and all(name in err for name in PRESETS)
    with pytest.raises(SystemExit):
        main(["profile", "--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in PRESETS), "the --preset help misses a preset the model knows"


def test_cl_bench_only_nonsense_names_the_valid_benchmarks(capsys):
    assert main(["bench", "--only", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "'nonsense'" in err
    assert all(name in err for name in ("kernels", "rollout", "online", "rollback", "soak"))


def test_cl_bench_on_a_down_stack_says_how_to_start_it(capsys, monkeypatch):
    import infra.stack
    from infra.component import ComponentStatus

    down = [ComponentStatus("kafka", "127.0.0.1:1", False, fix="run `cl up` to start it")]
    monkeypatch.setattr(infra.stack, "status", lambda config: down)
    assert main(["bench", "--only", "kernels,online"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cl bench: online needs the local stack")  # kernels runs without it
    assert "`cl up`" in err and "DOWN kafka" in err and "Traceback" not in err
