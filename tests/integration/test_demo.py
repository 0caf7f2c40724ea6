"""`make run`'s path with auth on, as a user gets it: `cl serve`, then `cl demo`, whose printed
keys work with the other commands."""

from __future__ import annotations

import re
import uuid

import pytest

pytestmark = pytest.mark.integration


def test_cl_demo_makes_keys_calls_the_service_with_them_and_the_admin_key_works(stack_environ, stack, cl_command):
    tag = uuid.uuid4().hex[:6]
    env = {
        **stack_environ,
        "CL_AUTH_ENABLED": "true",
        "CL_APP": f"demo{tag}",
        "CL_KAFKA_TOPIC_PREFIX": f"demo{tag}",
        "CL_SERVE_REPLICA_NUM_CPUS": "0.5",
    }
    env.pop("CL_API_KEY", None)
    assert cl_command(["up"], env).returncode == 0  # the stack is up: this only creates the app's topics
    served = cl_command(["serve"], env)
    assert served.returncode == 0, served.stderr
    try:
        demo = cl_command(["demo", "--requests", "96"], env)
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        keys = dict(re.findall(r"(demo-client|demo-admin)\s+\([^)]*\):\s+(cl_\S+)", demo.stdout))
        assert set(keys) == {"demo-client", "demo-admin"}, demo.stdout[:1500]
        assert "errors 0" in demo.stdout

        refused = cl_command(["versions"], env)
        assert refused.returncode == 1 and "CL_API_KEY" in refused.stderr  # no key: told how to get one
        listed = cl_command(["versions"], {**env, "CL_API_KEY": keys["demo-admin"]})
        assert listed.returncode == 0, listed.stderr

        again = cl_command(["demo", "--requests", "8"], env)  # a second demo replaces its keys
        assert again.returncode == 0, again.stderr[-2000:]
        stale = cl_command(["versions"], {**env, "CL_API_KEY": keys["demo-admin"]})
        assert stale.returncode == 1 and "revoked" in stale.stderr
    finally:
        from cl.config import load_config
        from serve import shutdown

        shutdown(load_config(path=None, env=env))
