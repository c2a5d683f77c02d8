"""Configuration is read once and fails fast with one clear line."""

import pytest

from webhook_service.core.config import load_config, require_secrets
from webhook_service.core.errors import ConfigError


def test_defaults_are_the_embedded_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config({})
    assert config.database_url == f"sqlite:///{tmp_path / 'webhook_service.db'}"
    assert config.database_url_is_default and config.embedded_queue
    assert config.tolerance == 300 and config.accept_mode == "any" and config.portal_api_keys == ()


def test_several_secrets_are_split_and_trimmed():
    config = load_config({"STRIPE_WEBHOOK_SECRETS": " whsec_abcdefgh123 , whsec_ijklmnop456 "})
    assert config.webhook_secrets == ("whsec_abcdefgh123", "whsec_ijklmnop456")


@pytest.mark.parametrize("value", ["sk_test_123", "whsec_", "whsec_short", "whsec_has space in it"])
def test_malformed_secret_names_the_variable_and_hides_the_value(value):
    with pytest.raises(ConfigError) as info:
        load_config({"STRIPE_WEBHOOK_SECRETS": value})
    message = str(info.value)
    assert "STRIPE_WEBHOOK_SECRETS" in message and "whsec_" in message
    assert value not in message or len(value) <= 6


def test_missing_secret_is_refused_where_required():
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRETS is not set"):
        require_secrets(load_config({}))


@pytest.mark.parametrize("value", ["0", "-5", "abc"])
def test_tolerance_must_be_positive_seconds(value):
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_TOLERANCE"):
        load_config({"STRIPE_WEBHOOK_TOLERANCE": value})


def test_accept_mode_is_validated():
    assert load_config({"STRIPE_ACCEPT_MODE": "LIVE"}).accept_mode == "live"
    with pytest.raises(ConfigError, match="STRIPE_ACCEPT_MODE"):
        load_config({"STRIPE_ACCEPT_MODE": "prod"})


def test_postgres_urls_get_the_installed_driver():
    config = load_config({"DATABASE_URL": "postgres://u@db/portal"})
    assert config.database_url == "postgresql+psycopg://u@db/portal"
    assert not config.database_url_is_default


def test_retry_intervals_are_configurable():
    assert load_config({"EVENT_RETRY_INTERVALS": "5,30,120"}).retry_intervals == (5, 30, 120)
    with pytest.raises(ConfigError, match="EVENT_RETRY_INTERVALS"):
        load_config({"EVENT_RETRY_INTERVALS": "5,soon"})


def test_secrets_do_not_appear_in_repr():
    config = load_config({"STRIPE_WEBHOOK_SECRETS": "whsec_abcdefgh123", "STRIPE_API_KEY": "sk_test_x",
                          "PORTAL_API_KEYS": "k1"})  # fmt: skip
    assert "sk_test_x" not in repr(config) and "k1" not in repr(config)
    assert "whsec_abcdefgh123" not in repr(config)
