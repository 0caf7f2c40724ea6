"""The domain of the service: model, learning, serving core, replay, drift, rollout, events, registry.

Subpackages hold one area each (docs/architecture.md maps them); ``cl.events`` and
``cl.registry`` are the contracts every process shares. Nothing here imports Ray Serve or Kafka.
"""

__all__: list[str] = []  # import the subpackages: cl.config, cl.model, cl.learning, cl.serving, ...
