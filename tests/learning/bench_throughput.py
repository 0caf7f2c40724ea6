"""Events per second of ``OnlineLearner.learn`` on the tiny base (run by hand, not by pytest).

    .venv/bin/python tests/learning/bench_throughput.py

Reports wall-clock and process-CPU rates (the CPU rate is steadier on a shared machine) for
label feedback at several micro-batch sizes, for KTO thumbs, and the raw model step for
comparison, all on one thread.
"""

from __future__ import annotations

import time


def main() -> None:
    import numpy as np
    import torch

    from cl.config import LearnerConfig, ModelSection
    from cl.learning.example import Example
    from cl.learning.online_learner import OnlineLearner
    from cl.model.base_model import build_base_model

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(8, 4))

    def stream(n: int, thumbs: bool) -> list[Example]:
        X = rng.normal(size=(n, 8))
        y = (X @ W).argmax(1)
        served = rng.integers(0, 4, n)
        if thumbs:
            return [
                Example(
                    f"e{i}",
                    f"r{i}",
                    "predict",
                    "thumbs",
                    features=tuple(X[i]),
                    served_label=int(served[i]),
                    desirable=bool(served[i] == y[i]),
                )
                for i in range(n)
            ]
        return [
            Example(
                f"e{i}",
                f"r{i}",
                "predict",
                "label",
                features=tuple(X[i]),
                served_label=int(served[i]),
                target=int(y[i]),
            )
            for i in range(n)
        ]

    def rate(batch: int, thumbs: bool, ratio: float = 1.0, n: int = 1600) -> tuple[float, float]:
        learner = OnlineLearner(build_base_model(ModelSection()), LearnerConfig(batch_size=batch, replay_ratio=ratio))
        events = stream(n + 10 * batch, thumbs)
        for i in range(0, 10 * batch, batch):  # warm up and fill the buffer a little
            learner.learn(events[i : i + batch])
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(10 * batch, len(events), batch):
            learner.learn(events[i : i + batch])
        return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)

    for batch in (16, 32, 64, 128):
        wall, cpu = rate(batch, thumbs=False)
        print(f"labels  batch={batch:<4d} replay_ratio=1  {wall:7.0f} events/s wall  {cpu:7.0f} events/s cpu")
    wall, cpu = rate(16, thumbs=False, ratio=0.0)
    print(f"labels  batch=16   replay_ratio=0  {wall:7.0f} events/s wall  {cpu:7.0f} events/s cpu")
    wall, cpu = rate(16, thumbs=True)
    print(f"thumbs  batch=16   replay_ratio=1  {wall:7.0f} events/s wall  {cpu:7.0f} events/s cpu  (KTO)")

    model = build_base_model(ModelSection()).train()
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=5e-3, weight_decay=0.0, foreach=True)
    x, y, ids = torch.randn(32, 8), torch.randint(0, 4, (32,)), torch.zeros(32, dtype=torch.long)
    cpu = time.process_time()
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(model(features=x, adapter_ids=ids), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"raw model step, 32 rows: {(time.process_time() - cpu) / 50 * 1e3:.1f} ms cpu")


if __name__ == "__main__":
    main()
