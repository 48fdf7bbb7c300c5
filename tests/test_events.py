"""The event bus: order, unsubscribe, and isolation of failing subscribers."""

from __future__ import annotations

import logging

import pytest

from bulletproof import events as ev


def test_subscribers_get_events_in_order_and_can_unsubscribe() -> None:
    bus = ev.EventBus()
    seen: list[ev.Event] = []
    unsubscribe = bus.subscribe(seen.append)
    bus.publish(ev.QueuePaused())
    bus.publish(ev.QueueResumed())
    unsubscribe()
    bus.publish(ev.QueueCleared(count=3))
    assert [type(e) for e in seen] == [ev.QueuePaused, ev.QueueResumed]
    unsubscribe()  # idempotent


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    bus = ev.EventBus()
    seen: list[ev.Event] = []

    def broken(_event: ev.Event) -> None:
        raise RuntimeError("plugin bug")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR):
        bus.publish(ev.QueueCleared(count=1))
    assert len(seen) == 1
    assert "QueueCleared" in caplog.text and "plugin bug" in caplog.text


def test_events_are_immutable_and_timestamped() -> None:
    event = ev.QueueCleared(count=2)
    assert event.at > 0
    with pytest.raises(AttributeError):
        event.count = 3  # type: ignore[misc]
