# The MLflow server of mlflow.yaml: the official image plus the PostgreSQL and S3 clients it lacks.
#   docker build -f infra/k8s/mlflow.Dockerfile -t registry.example.com/cl-mlflow:3.17.2 infra/k8s
# Keep the tag at the mlflow version of constraints.txt, so client and server match.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary boto3
