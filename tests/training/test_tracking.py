"""Where the tracking store keeps new experiments' artifacts."""

from __future__ import annotations

from training.tracking import ARTIFACT_ROOT_ENV, artifact_location

POSTGRES = "postgresql+psycopg2://postgres@db.internal:5432/mlflow"


def test_sqlite_keeps_artifacts_beside_the_database_and_a_server_store_decides(tmp_path,
                                                                                  monkeypatch):
    monkeypatch.delenv(ARTIFACT_ROOT_ENV, raising=False)
    database = tmp_path / "store" / "mlflow.db"
    assert artifact_location(f"sqlite:///{database}") == (tmp_path / "store" / "artifacts").as_uri()
    assert artifact_location(POSTGRES) is None
    assert artifact_location("http://mlflow.internal:5000") is None


def test_the_artifact_root_setting_wins_for_every_store(tmp_path, monkeypatch):
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "s3://models/mlflow")
    assert artifact_location(POSTGRES) == "s3://models/mlflow"
    assert artifact_location(f"sqlite:///{tmp_path / 'mlflow.db'}") == "s3://models/mlflow"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ARTIFACT_ROOT_ENV, "shared/artifacts")  # a folder, made absolute
    assert artifact_location(POSTGRES) == (tmp_path / "shared" / "artifacts").as_uri()
