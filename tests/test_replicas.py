"""Three replicas on one PostgreSQL behave as one bot: one answer per event, a thread's
answers in order, limits exact over all of them, and a killed one costs nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.fakes import eventually
from tests.fakes.openai_server import Delay, Stall
from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID
from tests.replicas import WAIT, Replica, cluster


def mention(text: str, ts: str, user: str = "U1") -> dict[str, object]:
    return {"type": "app_mention", "user": user, "text": f"<@{BOT_USER_ID}> {text}", "ts": ts,
            "channel": "C1", "team": TEAM_ID, "event_ts": ts}  # fmt: skip


def reply(text: str, ts: str, thread: str) -> dict[str, object]:
    return {"type": "message", "user": "U1", "text": text, "ts": ts, "thread_ts": thread,
            "channel": "C1", "channel_type": "channel", "team": TEAM_ID,
            "event_ts": ts}  # fmt: skip


async def send(replica: Replica, event: dict[str, object]) -> int:
    """Deliver an event with an id of its own (each replica's sender counts from 1)."""
    return await replica.sender.event(event, event_id=f"Ev{event['ts']}")


def turns(request: dict[str, object]) -> list[tuple[str, str]]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


async def test_an_event_delivered_to_two_replicas_is_answered_once(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(3, postgres_url, tmp_path) as bots:
        first, second, third = bots.replicas
        for number in range(6):
            ts = f"1700000000.{number:06d}"
            body = json.dumps(
                first.sender.envelope(mention(f"question {number}", ts), f"Ev{number}")
            )
            pair = [(first, second), (second, third), (third, first)][number % 3]
            statuses = await asyncio.gather(
                *(replica.sender.post(body, "application/json") for replica in pair)
            )
            assert [status for status, _ in statuses] == [200, 200]
        threads = [f"1700000000.{number:06d}" for number in range(6)]
        await eventually(lambda: all(bots.slack.thread("C1", t) for t in threads), within=WAIT)
        await asyncio.sleep(0.5)  # a second answer would have come by now
        for number, thread in enumerate(threads):
            assert [p.text for p in bots.slack.thread("C1", thread)] == [f"echo: question {number}"]
        assert len(bots.model.requests) == 6


async def test_a_threads_messages_sent_to_alternate_replicas_are_answered_in_order(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(3, postgres_url, tmp_path) as bots:
        thread = "1700000100.000000"
        # Each answer takes a while, so later messages arrive while earlier ones are
        # still being answered, on another replica.
        bots.model.script(*[Delay(0.3)] * 10)
        await send(bots.replicas[0], mention("message 0", thread))
        await eventually(lambda: bots.model.requests, within=WAIT)
        for number in range(1, 10):
            ts = f"1700000100.{number:06d}"
            await send(bots.replicas[number % 3], reply(f"message {number}", ts, thread))
        expected = [f"echo: message {n}" for n in range(10)]
        # The final texts, not the count: the last answer may still be streaming.
        await eventually(
            lambda: [p.text for p in bots.slack.thread("C1", thread)] == expected, within=WAIT
        )
        for number, request in enumerate(bots.model.requests):
            expected = []
            for earlier in range(number):
                expected += [
                    ("user", f"message {earlier}"),
                    ("assistant", f"echo: message {earlier}"),
                ]
            assert turns(request) == [*expected, ("user", f"message {number}")]


async def test_one_user_hammering_all_replicas_gets_exactly_the_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(3, postgres_url, tmp_path, PARLEY_RATE_PER_MINUTE="5") as bots:
        sends = [
            send(bots.replicas[number % 3], mention(f"q{number}", f"1700000200.{number:06d}"))
            for number in range(15)
        ]
        assert set(await asyncio.gather(*sends)) == {200}
        await eventually(
            lambda: len(bots.model.requests) + len(bots.slack.ephemerals("U1")) >= 15, within=WAIT
        )
        await asyncio.sleep(0.5)
        assert len(bots.model.requests) == 5
        refusals = bots.slack.ephemerals("U1")
        assert len(refusals) == 10
        assert all("limit of 5 requests per minute" in p.text for p in refusals)


async def test_killing_a_replica_mid_answer_leaves_the_others_answering(
    postgres_url: str, tmp_path: Path
) -> None:
    async with cluster(3, postgres_url, tmp_path) as bots:
        victim, survivor, other = bots.replicas
        stuck = "1700000300.000000"
        bots.model.script(Stall(30))  # the victim is mid-stream when it dies
        await send(victim, mention("never answered by this one", stuck))
        await eventually(lambda: bots.model.requests, within=WAIT)
        victim.kill()
        await send(survivor, mention("elsewhere", "1700000301.000000"))
        await send(other, reply("same thread, later", "1700000300.000001", stuck))
        elsewhere = "1700000301.000000"
        await eventually(
            lambda: [p.text for p in bots.slack.thread("C1", elsewhere)] == ["echo: elsewhere"],
            within=WAIT,
        )
        # The dead replica's turn in the thread runs out with its lease (3 s here).
        await eventually(lambda: any("same thread, later" in p.text
                                for p in bots.slack.thread("C1", stuck)), within=WAIT)  # fmt: skip
        assert "Traceback" not in bots.logs()
