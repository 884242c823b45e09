from __future__ import annotations

import pytest
from pydantic import ValidationError
from underlay.settings import Settings, env_source, get_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def test_env_source_nests_and_parses_json() -> None:
    data = env_source(
        {
            "UNDERLAY_STAGE": "prod",
            "UNDERLAY_HEALTH__CRITICAL": '["dynamodb", "redis"]',
            "UNDERLAY_TABLES__HEALTH_HISTORY": "t1",
            "OTHER": "ignored",
        }
    )
    assert data == {
        "stage": "prod",
        "health": {"critical": ["dynamodb", "redis"]},
        "tables": {"health_history": "t1"},
    }
    settings = Settings.model_validate(data)
    assert settings.resource("table", "health_history") == "t1"


def test_every_bad_field_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(
            env_source({"UNDERLAY_STAGE": "moon", "UNDERLAY_HEALTH__CACHE_SECONDS": "-1"})
        )
    fields = {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert fields == {"stage", "health.cache_seconds"}


def test_settings_are_validated_once_and_cached(clean_env: pytest.MonkeyPatch) -> None:
    first = get_settings()
    clean_env.setenv("UNDERLAY_STAGE", "prod")
    assert get_settings() is first  # not re-read until reset


def test_secrets_never_print() -> None:
    settings = Settings.model_validate({"redis": {"url": "redis://:sekret@host:6379/0"}})
    assert "sekret" not in repr(settings) and "sekret" not in settings.model_dump_json()


def test_composing_the_layers_never_changes_them() -> None:
    from underlay.config.runtime import compose

    stage = {"jobs": {"history_days": 21}, "cache": {"ttl_seconds": {"detail": 60}}}
    env = {"cache": {"ttl_seconds": {"list": 5}}}
    first = compose(stage, {"jobs.history_days": 30, "cache.ttl_seconds": {"detail": 1}}, env)
    assert first["jobs"] == {"history_days": 30} and first["cache"]["ttl_seconds"] == {"detail": 1, "list": 5}
    assert stage == {"jobs": {"history_days": 21}, "cache": {"ttl_seconds": {"detail": 60}}}
    assert env == {"cache": {"ttl_seconds": {"list": 5}}}
    assert compose(stage, {}, {})["jobs"] == {"history_days": 21}
