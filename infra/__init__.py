"""The local stack: start, check and stop Kafka (KRaft), the MLflow server and a Ray head.

``stack`` treats them as one thing (``cl up`` / ``cl down``), one module per service beside it;
``k8s/`` holds the manifests for a real cluster, ``grafana/`` the dashboard.
"""

__all__: list[str] = []  # use infra.stack.up / down / status
