"""The sending pipeline: snapshot, batches, claim, render, re-check, send, record, sweep.

1. start_campaign moves a scheduled campaign to `sending` and snapshots its recipients with one
   INSERT ... SELECT, in one transaction (so a crash in between leaves nothing half-done).
2. It enqueues send_batch jobs over id ranges of `message`.
3. A batch claims a few rows at a time (queued -> sending, atomically), re-reads the supporters
   (consent and the suppression list, just before sending), renders each message from the
   campaign's compiled template, waits for the global rate limit, checks that the supporter has
   not withdrawn since the claim (crm/supporters/withdrawn.py), sends over one reused SMTP
   connection, and records outcomes in small batches.
4. Pause and cancel reach every worker within a quarter of a second through Redis; the batch
   gives back what it claimed but did not send.
5. A batch's claimed rows carry its job id; its Redis heartbeat says it lives. The sweep marks
   rows of dead batches `unknown` (never resent), re-enqueues batches for rows still queued
   when no batch is at work, and finishes the campaign when nothing is queued or in flight.
RQ delivers jobs at least once; none of this relies on it delivering them exactly once.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask import current_app
from redis import Redis
from sqlalchemy import update

from campaigns import queries, variants
from campaigns.compose import CompiledCampaign, campaign_context, compile_campaign, supporter_context
from campaigns.mime import MessageSkeleton
from campaigns.throttle import ErrorWindow, Heartbeat, RelaySlots, RunState, SendRate, is_alive, set_campaign_state
from campaigns.tokens import preferences_url, test_preferences_url, unsubscribe_url
from campaigns.transport import (
    Declined,
    DeliveryError,
    PermanentFailure,
    SMTPTransport,
    TemporaryFailure,
    UncertainDelivery,
    smtp_settings,
)
from crm import events
from crm.extensions import db
from crm.models import Campaign
from crm.queues import SEND_BATCH, queue
from crm.redis_conn import get_redis
from crm.segments import compiler
from crm.segments.rules import RuleError, validate
from crm.settings import org
from crm.supporters.withdrawn import WithdrawalWatch
from tracking.tokens import make_tracking_token, tracking_urls

log = logging.getLogger(__name__)


class RelayUnavailable(Exception):
    """The relay could not be reached after retries; the batch gave its rows back."""


class _Withdrawn(Exception):
    """The supporter withdrew while their message waited for a retry."""


WITHDRAWN = "consent withdrawn while sending"


def _now() -> datetime:
    return datetime.now(UTC)


def _setting(name: str):
    return current_app.config[name]


# -- 1-2: start ------------------------------------------------------------------------------

def start_campaign(campaign_id: int, expected_version: int | None = None) -> int:
    """Move a scheduled campaign to sending, snapshot recipients, enqueue batches; return the count.

    Runs at most once per campaign: the status change is a compare-and-set, so a second run (a
    stale schedule, or RQ re-running the job) finds nothing to do.
    """
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != "scheduled":
        return 0
    if expected_version is not None and campaign.version != expected_version:
        return 0  # rescheduled or edited since this job was queued; a newer job owns it
    if campaign.scheduled_at and _aware(campaign.scheduled_at) > _now() + timedelta(seconds=5):
        return 0  # a stale job for an earlier time
    problem = readiness_problem(campaign)
    if problem:
        fail(campaign_id, problem)
        return 0
    condition = compiler.segment_condition(validate(campaign.segment.rules, segment_id=campaign.segment_id))
    now = _now()
    moved = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "scheduled")
        .values(status="sending", started_at=now, status_reason="")
        .execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        db.session.rollback()
        return 0
    total = queries.snapshot(campaign_id, condition, now)
    store_links(campaign)
    variants.split_at_snapshot(campaign_id)  # an A/B test: the test share queued, the rest held
    db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(total=total)
                       .execution_options(synchronize_session=False))
    db.session.commit()
    set_campaign_state(get_redis(), campaign_id, "sending")
    ErrorWindow(get_redis(), campaign_id, 1, 1).clear()
    log.info("campaign %s: %s recipients snapshotted", campaign_id, total)
    enqueue_batches(campaign_id)
    return total


def store_links(campaign: Campaign) -> None:
    """Keep the tracked links of the version being sent (its A/B variants' too): the only places its
    click redirect may go."""
    from crm.models import CampaignLink

    links = variants.tracked_links(campaign)
    exists = db.session.scalar(db.select(CampaignLink.position).where(
        CampaignLink.campaign_id == campaign.id, CampaignLink.version == campaign.version).limit(1))
    if links and exists is None:
        db.session.add_all(CampaignLink(campaign_id=campaign.id, version=campaign.version, position=i, url=url)
                           for i, url in enumerate(links))


def readiness_problem(campaign: Campaign) -> str:
    """Why this campaign cannot be sent now, in words for staff, or ''."""
    if problem := org.sending_problem():
        return problem
    if campaign.sender is None or not campaign.sender.is_active:
        return "Choose an active sender identity."
    if campaign.segment is None:
        return "Choose a segment to send to."
    try:
        validate(campaign.segment.rules, segment_id=campaign.segment_id)
    except RuleError as exc:
        return f"The segment's rules no longer hold: {exc}"
    try:
        compile_campaign(campaign)
    except ValueError as exc:
        return f"The content does not compile: {exc}"
    return ""


def enqueue_batches(campaign_id: int) -> int:
    """One send_batch job per range of SEND_BATCH_SIZE ids over the campaign's queued rows."""
    low, high = queries.id_bounds(campaign_id)
    if low is None:
        return 0
    size = int(_setting("SEND_BATCH_SIZE"))
    mail, redis = queue("mail"), get_redis()
    jobs = []
    for start in range(low, high + 1, size):
        # (after_id, upto_id]: the first batch starts just before the lowest id.
        job = mail.enqueue(SEND_BATCH, campaign_id, start - 1, min(start + size - 1, high),
                           job_timeout=max(600, size * 2), result_ttl=3600, failure_ttl=7 * 24 * 3600)
        jobs.append(job.id)
    redis.sadd(_jobs_key(campaign_id), *jobs)
    redis.expire(_jobs_key(campaign_id), 7 * 24 * 3600)
    return len(jobs)


def _batches_at_work(campaign_id: int, redis: Redis, exclude: str | None = None) -> int:
    """Batch jobs of this campaign still waiting in the queue, or running with a live heartbeat.

    A job whose worker was killed stays "started" in RQ until its own cleanup runs (minutes);
    our heartbeat expires in seconds, so we do not wait for RQ to notice.
    """
    from rq.job import Job, JobStatus

    ids = [i.decode() if isinstance(i, bytes) else i for i in redis.smembers(_jobs_key(campaign_id))]
    active = 0
    for job_id, job in zip(ids, Job.fetch_many(ids, connection=redis), strict=True):
        status = job.get_status(refresh=False) if job is not None else None
        waiting = status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
        running = status == JobStatus.STARTED and is_alive(redis, job_id)
        if job_id != exclude and (waiting or running):
            active += 1
        elif not waiting and not running:
            redis.srem(_jobs_key(campaign_id), job_id)
    return active


def _jobs_key(campaign_id: int) -> str:
    return f"crm:send:campaign:{campaign_id}:batch-jobs"


# -- 3-4: a batch ----------------------------------------------------------------------------

@dataclass
class Renderer:
    """Everything one campaign's messages share, built once per batch: compiled templates,
    the MIME skeleton, the organisation and campaign context."""

    campaign: Campaign
    compiled: CompiledCampaign
    skeleton: MessageSkeleton
    base_context: dict = field(default_factory=dict)
    # (campaign id, version) read once: the campaign row expires at every commit of the batch.
    tracking_key: tuple[int, int] = (0, 0)

    @classmethod
    def for_campaign(cls, campaign: Campaign, *, tracking: bool = True, known_links: tuple[str, ...] = ()) -> Renderer:
        config = current_app.config
        sender = campaign.sender
        skeleton = MessageSkeleton(
            from_name=sender.name, from_address=sender.email,
            reply_to=campaign.reply_to or sender.reply_to, list_name=f"{org.current().name} updates",
            campaign_id=campaign.id, unsubscribe_mailto=config.get("UNSUBSCRIBE_MAILTO") or "",
        )
        context = {"org": org.current().as_context(), "campaign": campaign_context(campaign)}
        return cls(campaign, compile_campaign(campaign, tracking=tracking, known_links=known_links), skeleton, context,
                   (campaign.id, campaign.version))

    @property
    def uses_petitions(self) -> bool:
        """Whether any part mentions petitions (else the batch skips fetching signatures)."""
        return "petitions" in self.compiled.html_source or "petitions" in self.compiled.text_source

    def render_message(self, message_id: int, person: dict, *, test: bool = False,
                       unsubscribe: str | None = None) -> tuple[str, bytes]:
        """(Message-ID, the message as bytes) for one supporter; builds the unsubscribe URL too."""
        url = unsubscribe or unsubscribe_url(message_id)
        context = dict(self.base_context)
        context["supporter"] = supporter_context(
            first_name=person.get("first_name") or "", last_name=person.get("last_name") or "",
            email=person["email"], postal_code=person.get("postal_code") or "",
            country=person.get("country") or "", petitions=person.get("petitions"),
            custom=person.get("custom_fields"))
        context["unsubscribe_url"] = url
        context["preferences_url"] = test_preferences_url() if test else preferences_url(message_id)
        if not test and (self.compiled.links or self.compiled.tracks_opens):
            context.update(tracking_urls(make_tracking_token(message_id, *self.tracking_key)))
        parts = self.compiled.render(context)
        subject = f"[TEST] {parts.subject}" if test else parts.subject
        msgid = self.skeleton.message_id(message_id if not test else "test")
        raw = self.skeleton.build(
            to_address=person["email"], to_name=context["supporter"].get("full_name", ""), subject=subject,
            text=parts.text_pieces, html=parts.html_pieces, message_id=msgid, unsubscribe_url=url,
            message_ref=f"{self.skeleton.campaign_id}.{message_id if not test else 'test'}", date=_now())
        return msgid, raw


@dataclass
class _InFlight:
    """The message handed to the relay whose verdict is not read yet (or its first attempt's error)."""

    index: int
    row: object
    email: str
    message_id: str
    raw: bytes
    sender: str
    error: DeliveryError | None = None


class _Batch:
    """State of one send_batch run; see send_batch."""

    def __init__(self, campaign: Campaign, holder: str, redis: Redis, job_id: str | None = None):
        config = current_app.config
        self.campaign_id = campaign.id
        self.holder = holder
        self.redis = redis
        self.renderer = Renderer.for_campaign(campaign)
        # An A/B test's messages each carry a variant: one renderer per variant, built once.
        self.renderers = {None: self.renderer}
        for variant, content, known in variants.contents(campaign):
            self.renderers[variant.id] = Renderer.for_campaign(content, known_links=known)
        self.envelope_from = config.get("BOUNCE_ADDRESS") or campaign.sender.email
        # VERP: each message's own return path, bounces+<campaign>.<message>@domain, so the
        # bounce mailbox can tell which message came back even from a DSN that quotes nothing.
        self.verp = bool(config.get("BOUNCE_VERP")) and "@" in self.envelope_from
        settings = smtp_settings(current_app)
        self.transport = SMTPTransport(settings, timeout=float(config["SMTP_TIMEOUT_SECONDS"]))
        self.slots = RelaySlots(redis, f"{settings['host']}:{settings['port']}",
                                int(config["SMTP_MAX_CONNECTIONS"]))
        self.rate = SendRate(redis, float(config["SEND_RATE_PER_SECOND"]))
        self.state = RunState(redis, campaign.id)
        self.heartbeat = Heartbeat(redis, [holder, job_id], int(config["SEND_HEARTBEAT_SECONDS"]))
        window = int(config["SEND_ERROR_WINDOW"])
        self.errors = ErrorWindow(redis, campaign.id, window, float(config["SEND_ERROR_RATE"]),
                                  minimum=min(50, window))
        self.chunk = int(config["SEND_CHUNK_SIZE"])
        self.retries = int(config["SEND_RETRIES"])
        self.backoff = float(config["SEND_RETRY_BACKOFF_SECONDS"])
        self.flush_every = int(config["SEND_FLUSH_EVERY"])
        self.tokens = 0
        # Subscribed before the first claim reads anyone: see crm/supporters/withdrawn.py.
        self.watch = WithdrawalWatch(redis)
        self.chunk_generation = 0
        self.pending: list[dict] = []
        self.failures: list[bool] = []
        self.sent = 0

    def run(self, after_id: int, upto_id: int) -> int:
        self.heartbeat.beat(force=True)
        self.slots.acquire(self.holder, on_wait=self.heartbeat.beat)
        self.heartbeat.beat(force=True)
        try:
            cursor = after_id
            while not self.state.stopped():
                rows, people = self._claim(cursor, upto_id)
                if not rows:
                    break
                cursor = rows[-1].id
                self._send_chunk(rows, people)
        finally:
            self.flush()
            self.transport.close()
            self.watch.close()
            self.slots.release(self.holder)
        return self.sent

    def _claim(self, after_id: int, upto_id: int) -> tuple[list, dict[int, dict]]:
        """Claim the next chunk and re-read its supporters, recording the outcomes still waiting
        in the same transaction: one durable commit (the claim's must be) instead of two."""
        pending, self.pending = self.pending, []
        queries.record(pending, commit=False)
        self.chunk_generation = self.watch.generation  # notices from here on cover this read
        rows = queries.claim(self.campaign_id, after_id, upto_id, self.holder, self.chunk, _now())
        people = queries.recipients([r.supporter_id for r in rows if r.supporter_id is not None],
                                    with_petitions=any(r.uses_petitions for r in self.renderers.values())
                                    ) if rows else {}
        db.session.commit()
        self._check_errors()
        return rows, people

    def _send_chunk(self, rows: list, people: dict[int, dict]) -> None:
        """Send a claimed chunk, keeping the relay busy while we work.

        For each message: its envelope goes out behind the content of the message in flight
        (SMTPTransport.announce), it is rendered while the relay reads both, then the verdict
        on the message in flight is read and recorded, and this one's content handed over. At
        most one message per batch is ever delivered without its outcome recorded, and outcomes
        are recorded in order. One thread: no second thread contending for the GIL.
        """
        self.heartbeat.beat()
        self.slots.renew(self.holder)
        in_flight: _InFlight | None = None
        for i, row in enumerate(rows):
            if len(self.pending) >= self.flush_every:
                self.flush()  # while the relay reads the message in flight
            if self.state.stopped():
                if in_flight is not None:
                    self._settle(in_flight, rows)
                    in_flight = None
                self._give_back([r.id for r in rows[i:]])
                return
            person = people.get(row.supporter_id)
            if person is None or not person["is_mailable"]:
                # Unsubscribed, bounced, erased or suppressed since the snapshot: skip for good.
                self._outcome(row.id, "suppressed", error="consent changed before sending")
                continue
            if in_flight is not None:
                self.transport.announce(self._envelope(row.id), person["email"])
            try:
                renderer = self.renderers.get(getattr(row, "variant_id", None), self.renderer)
                msgid, raw = renderer.render_message(row.id, person)
            except ValueError as exc:  # e.g. an address no header can carry: this one fails, the rest go
                if in_flight is not None:
                    self._settle(in_flight, rows)
                    in_flight = None
                self.transport.withdraw()
                self._outcome(row.id, "failed", error=f"could not build the message: {exc}", failed=True)
                continue
            self._take_token(len(rows) - i)
            if in_flight is not None:
                self._settle(in_flight, rows)
                in_flight = None
            flight = _InFlight(i, row, person["email"], msgid, raw, self._envelope(row.id))
            if self._start(flight, [r.supporter_id for r in rows[i:]]):
                in_flight = flight
            else:
                self._outcome(row.id, "suppressed", error=WITHDRAWN)
        if in_flight is not None:
            self._settle(in_flight, rows)
        # If anything above raised, the row in flight stays `sending` and the sweep calls it
        # unknown: it may have been delivered, so it is never sent again.

    def _withdrawn(self, supporter_id: int | None, remaining: list[int | None]) -> bool:
        """Whether this supporter stopped being mailable since their chunk was claimed.

        The withdrawal notices answer (no round trip); when they may have missed some (the
        subscription broke), the database does: for this supporter alone while Redis is away,
        or for `remaining` (the rest of the chunk) at once when the subscription is back, after
        which the notices answer again."""
        verdict = self.watch.is_withdrawn(supporter_id, self.chunk_generation)
        if verdict is not None:
            return verdict
        listening, generation = self.watch.listening, self.watch.generation
        ids = remaining if listening else [supporter_id]
        mailable = queries.mailable_among(ids)
        db.session.commit()  # end the read: SQLite would otherwise keep its snapshot
        self.watch.withdrawn.update(set(ids) - mailable)
        if listening:
            self.chunk_generation = generation
        return supporter_id not in mailable

    def _start(self, flight: _InFlight, remaining: list[int | None]) -> bool:
        """Hand the message to the relay; False if its supporter withdrew since the claim.

        The withdrawal is checked once the relay has accepted the envelope, the last moment
        before the content goes out (the transport then closes the connection instead). A
        refusal is kept in the flight for _settle to act on, in order."""
        supporter_id = flight.row.supporter_id
        try:
            self.transport.start(flight.sender, flight.email, flight.raw,
                                 proceed=lambda: not self._withdrawn(supporter_id, remaining))
        except Declined:
            return False
        except DeliveryError as exc:
            flight.error = exc
        return True

    def _verdict(self, flight: _InFlight) -> None:
        """Return once the relay accepted the message; raise the DeliveryError that stopped it."""
        error = flight.error
        if error is None:
            try:
                self.transport.finish()
                return
            except DeliveryError as exc:
                error = exc
        if not isinstance(error, TemporaryFailure):
            raise error
        self._retry(flight, error)

    def _settle(self, sent: _InFlight, rows: list) -> None:
        """Read the relay's verdict on the message in flight and record it."""
        row = sent.row
        try:
            self._verdict(sent)
        except PermanentFailure as exc:
            self._outcome(row.id, "bounced" if exc.user_unknown else "failed", error=str(exc), failed=True)
            if exc.user_unknown:
                self._report_bounce(row.id, sent.email, exc)
        except UncertainDelivery as exc:
            self._outcome(row.id, "unknown", error=str(exc), failed=True)
        except _Withdrawn:
            self._outcome(row.id, "suppressed", error=WITHDRAWN)
        except TemporaryFailure as exc:
            if exc.code is None:  # no relay at all: give back this row and every later one, and pause
                self.flush()
                self._give_back([r.id for r in rows[sent.index:]], error=str(exc))
                raise RelayUnavailable(str(exc)) from None
            self._outcome(row.id, "queued", error=str(exc), failed=True)  # a later sweep retries it
        else:
            self._outcome(row.id, "sent", smtp_id=sent.message_id, email=sent.email)
            self.sent += 1

    def _take_token(self, wanted: int) -> None:
        """One send's worth of the global rate, taken from Redis a block at a time."""
        if self.tokens == 0:
            block = max(1, min(wanted, self.rate.block))

            def keep_alive() -> None:
                self.heartbeat.beat()
                self.slots.renew(self.holder)

            self.rate.acquire(block, on_wait=keep_alive)
            self.tokens = block
        self.tokens -= 1

    def _retry(self, flight: _InFlight, error: TemporaryFailure) -> None:
        """After a 4xx or a lost connection: SEND_RETRIES more tries, each on a fresh connection
        after a doubling pause; raises the last TemporaryFailure if none is accepted, and
        _Withdrawn if the supporter withdrew meanwhile."""
        supporter_id = flight.row.supporter_id
        for attempt in range(self.retries):
            self.transport.drop()
            self.heartbeat.beat()
            time.sleep(self.backoff * (2 ** attempt))
            try:
                self.transport.deliver(flight.sender, flight.email, flight.raw,
                                       proceed=lambda: not self._withdrawn(supporter_id, [supporter_id]))
                return
            except Declined:
                raise _Withdrawn() from None
            except TemporaryFailure as exc:
                error = exc
        raise error

    def _outcome(self, message_id: int, status: str, *, smtp_id: str | None = None, error: str = "",
                 email: str | None = None, failed: bool = False) -> None:
        if status == "queued":
            self.flush()
            queries.release([message_id], self.holder, error=error)
        else:
            self.pending.append({"mid": message_id, "new_status": status,
                                 "new_sent_at": _now() if status == "sent" else None,
                                 "new_smtp_id": smtp_id, "new_error": error[:1000], "new_email": email})
        if status != "suppressed":
            self.failures.append(failed)

    def _give_back(self, message_ids: list[int], error: str = "") -> None:
        self.flush()
        if self.state.current() == "cancelled":
            queries.release(message_ids, self.holder, to_status="cancelled")
        else:
            queries.release(message_ids, self.holder, error=error)

    def _envelope(self, message_id: int) -> str:
        """The envelope sender (Return-Path) for one message: VERP-tagged when configured."""
        if not self.verp:
            return self.envelope_from
        local, _, domain = self.envelope_from.rpartition("@")
        return f"{local}+{self.campaign_id}.{message_id}@{domain}"

    def _report_bounce(self, message_id: int, address: str, exc: PermanentFailure) -> None:
        """The relay said the address does not exist: a hard bounce, applied by the one service
        every bounce goes through (feedback/apply.py), like a relay's webhook or a DSN."""
        from feedback.apply import apply_feedback
        from feedback.types import Feedback, enhanced_status, scrub

        self.flush()
        apply_feedback(Feedback(
            provider="smtp", kind="bounce", event_id=f"message:{message_id}", address=address,
            message_ref=f"{self.campaign_id}.{message_id}", hard=True,
            status=enhanced_status(exc.reply) or str(exc.code or ""), detail=scrub(str(exc))))

    def flush(self) -> None:
        """Record outcomes, then check the error threshold."""
        if self.pending:
            pending, self.pending = self.pending, []
            queries.record(pending)
        self._check_errors()

    def _check_errors(self) -> None:
        """Push the latest outcomes onto the campaign's error window; pause it when it trips."""
        if self.failures:
            failures, self.failures = self.failures, []
            failed, length = self.errors.record(failures)
            if self.errors.tripped(failed, length) and self.state.current() == "sending":
                pause(self.campaign_id, f"Paused automatically: {failed} of the last {length} messages "
                                        "failed. Check the relay and the failed messages, then resume.")
                self.state.refresh()


def send_batch(campaign_id: int, after_id: int, upto_id: int, job_id: str | None = None) -> int:
    """Send the campaign's queued messages with ids in (after_id, upto_id]; return how many were sent.

    `job_id` is the RQ job's id: its heartbeat tells the sweep this batch is alive. Each run
    claims under its own holder id, so even a second run of the same job never touches rows
    the first one claimed.
    """
    holder = uuid.uuid4().hex
    redis = get_redis()
    campaign = db.session.get(Campaign, campaign_id)
    relay_down = None
    try:
        if campaign is None or campaign.status != "sending":
            return 0
        return _Batch(campaign, holder, redis, job_id).run(after_id, upto_id)
    except RelayUnavailable as exc:
        relay_down = exc
        return 0
    finally:
        Heartbeat(redis, [holder, job_id], 1).stop()
        db.session.rollback()
        if relay_down is not None:
            pause(campaign_id, f"Paused automatically: the mail relay could not be reached ({relay_down}). "
                               "Resume when it is back; nothing was lost.")
        sweep(campaign_id, finishing=job_id)


# -- 5-7: sweep and finish -------------------------------------------------------------------

def sweep(campaign_id: int, finishing: str | None = None) -> str:
    """Settle a sending campaign: dead batches' rows -> unknown; requeue; finish. Returns the status.

    Safe to run any number of times from anywhere (the end of every batch, the workers' periodic
    sweep in campaigns.lifecycle.sweep_active): each step is a guarded UPDATE.
    """
    redis = get_redis()
    for holder in queries.holders_in_flight(campaign_id):
        if holder and not is_alive(redis, holder):
            lost = queries.mark_unknown(campaign_id, holder)
            log.warning("campaign %s: %s messages of a stopped batch marked unknown", campaign_id, lost)
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None or campaign.status != "sending":
        return campaign.status if campaign else "gone"
    queries.retry_exhausted(campaign_id, int(_setting("SEND_MAX_ATTEMPTS")))
    db.session.commit()
    counts = queries.status_counts(campaign_id)
    if not counts.get("queued") and not counts.get("sending") and not counts.get("held"):
        finish(campaign_id, counts)
        return "sent"
    if counts.get("queued") and not _batches_at_work(campaign_id, redis, exclude=finishing):
        enqueue_batches(campaign_id)
    return "sending"


def finish(campaign_id: int, counts: dict[str, int]) -> None:
    moved = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "sending")
        .values(status="sent", finished_at=_now(), **_counters(counts))
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved:  # stored with the status change (crm/events.py), so it is told once
        events.emit("campaign.sent", {"campaign_id": campaign_id, **_counters(counts)})
    db.session.commit()
    if moved:
        set_campaign_state(get_redis(), campaign_id, "sent")
        log.info("campaign %s: finished %s", campaign_id, counts)


def _counters(counts: dict[str, int]) -> dict[str, int]:
    return {"sent_count": counts.get("sent", 0),
            "failed_count": counts.get("failed", 0) + counts.get("bounced", 0),
            "unknown_count": counts.get("unknown", 0), "suppressed_count": counts.get("suppressed", 0)}


# -- lifecycle transitions the workers must see ----------------------------------------------

def pause(campaign_id: int, reason: str = "") -> bool:
    moved = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "sending")
        .values(status="paused", status_reason=reason)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    if moved:
        set_campaign_state(get_redis(), campaign_id, "paused")
        log.warning("campaign %s paused: %s", campaign_id, reason or "by staff")
    return bool(moved)


def resume(campaign_id: int) -> bool:
    moved = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status == "paused")
        .values(status="sending", status_reason="")
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    if moved:
        redis = get_redis()
        set_campaign_state(redis, campaign_id, "sending")
        ErrorWindow(redis, campaign_id, 1, 1).clear()
        sweep(campaign_id)
    return bool(moved)


def cancel(campaign_id: int) -> bool:
    moved = db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(("scheduled", "sending", "paused")))
        .values(status="cancelled", finished_at=_now())
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved:
        queries.cancel_queued(campaign_id)
        db.session.execute(update(Campaign).where(Campaign.id == campaign_id)
                           .values(**_counters(queries.status_counts(campaign_id)))
                           .execution_options(synchronize_session=False))
    db.session.commit()
    if moved:
        set_campaign_state(get_redis(), campaign_id, "cancelled")
    return bool(moved)


def fail(campaign_id: int, reason: str) -> None:
    db.session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(("scheduled", "sending")))
        .values(status="failed", status_reason=reason, finished_at=_now())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    set_campaign_state(get_redis(), campaign_id, "failed")
    log.error("campaign %s failed: %s", campaign_id, reason)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
