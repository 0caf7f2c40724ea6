"""Data-parallel learning: two gloo ranks with different (sometimes empty) micro-batches stay
one model, and that model is the one a single learner gets from the union of their data."""

from __future__ import annotations

import multiprocessing as mp
import socket

import torch
import torch.distributed as dist

from cl.config import ModelSection
from cl.learning.data_parallel import SingleProcess, TorchDistributed, current_group
from cl.learning.online_learner import OnlineLearner
from cl.model.base_model import build_base_model

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, steps: list[list[list]], config, results) -> None:  # noqa: ANN001
    """One rank: join the group, learn its share of every step, hand back what it holds."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        group = current_group()
        assert isinstance(group, TorchDistributed) and group.rank == rank
        learner = OnlineLearner(build_base_model(ModelSection()), config, group=group)
        reports = [learner.learn(shares[rank]) for shares in steps]
        results.put(
            (
                rank,
                {
                    "adapter": {k: v.numpy() for k, v in learner.model.adapter_state(0).items()},  # plain pickles
                    "bias": [b.numpy().copy() for b in learner.model.balance_biases()],
                    "detector": learner.state_dict()["detector"],
                    "errors": [r.errors for r in reports],
                    "events_seen": learner.events_seen,
                    "lr": learner.metrics()["lr"],
                },
            )
        )
    finally:
        dist.destroy_process_group()


def _run_ranks(steps: list[list[list]], config) -> dict[int, dict]:  # noqa: ANN001
    ctx = mp.get_context("fork")  # the examples and config travel with the fork, not by pickling
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, steps, config, results)) for r in range(WORLD)]
    for p in procs:
        p.start()
    out = dict(results.get(timeout=120) for _ in procs)
    for state in out.values():
        state["adapter"] = {k: torch.from_numpy(v) for k, v in state["adapter"].items()}
        state["bias"] = [torch.from_numpy(b) for b in state["bias"]]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"rank process exited with {p.exitcode}"
    return out


def test_single_process_group_is_the_identity():
    group = SingleProcess()
    t = torch.arange(3.0)
    group.sum_([t])
    group.broadcast_([t])
    assert t.tolist() == [0.0, 1.0, 2.0] and group.all_gather("x") == ["x"]
    assert isinstance(current_group(), SingleProcess)  # no process group in this process


def test_two_ranks_learn_what_one_learner_learns_from_their_union(synth, helpers):
    config = helpers.config(replay_ratio=0.0)  # replay samples differ by rank by design
    X, y = synth.sample(48)
    examples = synth.labels(X, y)
    steps = [
        [examples[0:16], examples[16:32]],  # both ranks have rows
        [examples[32:48], []],  # rank 1 has nothing new but still takes part
        [[], []],  # nobody has rows: no step anywhere
    ]
    ranks = _run_ranks(steps, config)

    single = OnlineLearner(build_base_model(ModelSection()), config)
    single_reports = [single.learn(shares[0] + shares[1]) for shares in steps]

    a, b = ranks[0], ranks[1]
    for key in a["adapter"]:
        assert torch.equal(a["adapter"][key], b["adapter"][key]), f"ranks disagree on {key}"
        torch.testing.assert_close(
            a["adapter"][key], single.model.adapter_state(0)[key], rtol=0, atol=5e-5
        )  # 1% of one Adam step (lr 5e-3)
    for bias_a, bias_b in zip(a["bias"], b["bias"]):
        assert torch.equal(bias_a, bias_b)
    # Every rank's detector saw the whole error stream, in rank order: the single learner's.
    assert a["errors"] == b["errors"] == [r.errors for r in single_reports]
    assert a["detector"] == b["detector"] == single.state_dict()["detector"]
    assert a["events_seen"] + b["events_seen"] == single.events_seen == 48
    # And learning happened: the adapter moved away from the base.
    assert any(a["adapter"][k].abs().sum() > 0 for k in a["adapter"] if k.endswith("lora_b"))


def test_a_drift_boosts_the_learning_rate_on_every_rank(synth, helpers):
    config = helpers.config(replay_ratio=0.0, drift_detector="page_hinkley", drift_actions="boost_lr,reset")
    X, y = synth.sample(256)
    right = synth.labels(X[:128], y[:128], served=y[:128])  # served right: no errors
    wrong = synth.labels(X[128:], y[128:], served=(y[128:] + 1) % 4)  # then every answer is wrong
    steps = [[right[i : i + 8], right[i + 8 : i + 16]] for i in range(0, 128, 16)]
    steps += [[wrong[i : i + 16], []] for i in range(0, 128, 16)]  # only rank 0 sees the errors
    ranks = _run_ranks(steps, config)
    assert ranks[0]["lr"] == ranks[1]["lr"] == config.lr * config.boost_factor
