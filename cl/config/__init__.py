"""The service's one typed configuration: a TOML file plus ``CL_*`` environment variables.

One module per section (``stack``, ``serving``, ``model``, ``learner``, ``rollout``), the
whole in ``service``, reading it in ``loading``.

Defaults give a working local setup (every service on 127.0.0.1, state under ``.state/``).
Precedence, lowest first: defaults, the TOML file, environment variables.

* The file is ``$CL_CONFIG`` if set, else ``./cl.toml`` if it exists.
* ``CL_<SECTION>_<KEY>`` sets ``[section] key`` (``CL_KAFKA_PORT=9192``); ``CL_<KEY>`` sets a
  top-level key (``CL_STATE_DIR``). ``RAY_ADDRESS`` sets ``ray.address``, as Ray itself reads it.
* ``CL_KAFKA_BOOTSTRAP``, ``CL_MLFLOW_URI`` or ``RAY_ADDRESS`` point at existing services:
  ``cl up`` then starts nothing of that kind and uses them.

Example:
    >>> cfg = load_config(env={"CL_KAFKA_PORT": "9192"}, path=None)
    >>> cfg.kafka.bootstrap_servers
    '127.0.0.1:9192'
    >>> cfg.topics.feedback
    'cl.feedback'
"""

from cl.config.errors import ConfigError
from cl.config.learner import DRIFT_ACTIONS, LearnerConfig
from cl.config.loading import load_config, load_config_values
from cl.config.model import ModelSection
from cl.config.rollout import RolloutConfig
from cl.config.service import Config
from cl.config.serving import ROLES, AuthConfig, ServeConfig
from cl.config.stack import KafkaConfig, MLflowConfig, RayConfig, Topics

__all__ = [
    "DRIFT_ACTIONS",
    "ROLES",
    "AuthConfig",
    "Config",
    "ConfigError",
    "KafkaConfig",
    "LearnerConfig",
    "MLflowConfig",
    "ModelSection",
    "RayConfig",
    "RolloutConfig",
    "ServeConfig",
    "Topics",
    "load_config",
    "load_config_values",
]
