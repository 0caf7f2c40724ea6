"""Run every benchmark, one after the other (`make bench`): kernels on the CPU, the rollout
policies (simulation), then the online loop, the rollback reaction and the soak.

The online-loop benchmarks need the local stack (`cl up`); `make bench` starts it.
"""

import sys

from bench import bench_kernels, bench_online, bench_rollback_reaction, bench_rollout, bench_soak

if __name__ == "__main__":
    print("#### kernels (CPU)\n", flush=True)
    code = bench_kernels.main([]) or 0
    print("\n#### rollout policies (simulation)\n", flush=True)
    bench_rollout.main([])
    print("\n#### online loop (local stack)\n", flush=True)
    bench_online.main([])
    print("\n#### rollback reaction (local stack)\n", flush=True)
    bench_rollback_reaction.main([])
    print("\n#### soak (local stack)\n", flush=True)
    bench_soak.main([])
    sys.exit(code)
