"""GFG_KAFKA_* security settings reach every Kafka client the services build."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

import shared.kafka as kafka
from shared.kafka import BatchConsumer, KafkaAccess, ensure_topics, make_producer
from shared.settings import CommonSettings

SECRET = "x" * 32


class Recorder:
    """Stands in for an aiokafka client class: records the keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)

        class Client:
            async def start(self) -> None:
                return None

            async def close(self) -> None:
                return None

            async def list_topics(self) -> list[str]:
                return ["t", "t.dlq"]

        return Client()


@pytest.fixture
def ssl_contexts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []

    def create_ssl_context(**kwargs: Any) -> str:
        made.append(kwargs)
        return f"ssl-context-{len(made)}"

    monkeypatch.setattr(kafka, "create_ssl_context", create_ssl_context)
    return made


async def test_environment_reaches_every_client(
    monkeypatch: pytest.MonkeyPatch, ssl_contexts: list[dict[str, Any]]
) -> None:
    env = {
        "GFG_KAFKA_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
        "GFG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "GFG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "GFG_KAFKA_SASL_PLAIN_USERNAME": "svc-orders",
        "GFG_KAFKA_SASL_PLAIN_PASSWORD": "s3cret",
        "GFG_KAFKA_SSL_CAFILE": "/etc/gfg/kafka-ca.pem",
        "GFG_KAFKA_SSL_CERTFILE": "/etc/gfg/orders.pem",
        "GFG_KAFKA_SSL_KEYFILE": "/etc/gfg/orders.key",
        "GFG_KAFKA_SSL_KEY_PASSWORD": "keypw",
        "GFG_JWT_SECRET": SECRET,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    access = KafkaAccess.from_settings(CommonSettings())
    expected = {
        "bootstrap_servers": "kafka-1:9093,kafka-2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-orders",
        "sasl_plain_password": "s3cret",
    }

    producers = Recorder()
    monkeypatch.setattr(kafka, "AIOKafkaProducer", producers)
    producer = make_producer(access)
    [producer_kwargs] = producers.calls
    assert producer_kwargs.items() >= expected.items()
    assert producer_kwargs["ssl_context"] == "ssl-context-1"
    assert producer_kwargs["enable_idempotence"] is True

    consumers = Recorder()
    monkeypatch.setattr(kafka, "AIOKafkaConsumer", consumers)
    BatchConsumer(bootstrap=access, topic="t", group_id="g", handler=_no_op, producer=producer)
    [consumer_kwargs] = consumers.calls
    assert consumer_kwargs.items() >= expected.items()
    assert consumer_kwargs["ssl_context"] == "ssl-context-2"
    assert consumer_kwargs["enable_auto_commit"] is False

    admins = Recorder()
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", admins)
    await ensure_topics(access, ["t"], 3)
    [admin_kwargs] = admins.calls
    assert admin_kwargs.items() >= expected.items()
    assert admin_kwargs["ssl_context"] == "ssl-context-3"

    assert (
        ssl_contexts
        == [
            {
                "cafile": "/etc/gfg/kafka-ca.pem",
                "certfile": "/etc/gfg/orders.pem",
                "keyfile": "/etc/gfg/orders.key",
                "password": "keypw",
            }
        ]
        * 3
    )


async def _no_op(records: Any) -> list[Any]:
    return []


async def test_plaintext_is_the_default_and_takes_no_ssl(
    monkeypatch: pytest.MonkeyPatch, ssl_contexts: list[dict[str, Any]]
) -> None:
    options = KafkaAccess.from_settings(CommonSettings(jwt_secret=SECRET)).client_options()
    assert options == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    producers = Recorder()
    monkeypatch.setattr(kafka, "AIOKafkaProducer", producers)
    make_producer("h:1")
    assert producers.calls[0]["bootstrap_servers"] == "h:1"
    assert producers.calls[0]["security_protocol"] == "PLAINTEXT"
    assert ssl_contexts == []


@pytest.mark.parametrize(
    "settings",
    [
        {"kafka_security_protocol": "SASL_SSL"},
        {"kafka_sasl_mechanism": "PLAIN"},
        {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
        {"kafka_security_protocol": "TLS"},
    ],
)
def test_incomplete_security_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CommonSettings(jwt_secret=SECRET, **settings)
