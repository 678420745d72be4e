"""The SQL of a public signature that needs more than the ORM gives cheaply.

Most signers of a busy petition are new addresses. For them the ORM path costs about ten
round trips (suppression check, supporter lookup, supporter insert, signature check,
signature insert, wording lookup, status update, consent insert, ...), each a few hundred
microseconds of server CPU between SQLAlchemy, psycopg and PostgreSQL. SIGN_NEW_SUPPORTER
does the same work for a new address in one statement; everything else (a known supporter,
a suppressed address) still goes through the ORM rules in crm.petitions.signing.
"""

from __future__ import annotations

from sqlalchemy import text

# PostgreSQL only (data-modifying CTEs). One statement, so one round trip, and atomic on its own:
# it runs in autocommit, so there is no BEGIN or COMMIT round trip either.
#
# target reads the petition and the wording from the database, not from the caller's
# (possibly cached) copy: it is empty unless the petition is open, does not ask for double
# opt-in (those signers take the ORM path, which defers their consent), and has the wording version
# the form showed (:wording_version; NULL means the current version). Everything below
# inserts from it, so a closed petition gets nothing, and the consent event copies that
# version's text, number and id from its row. The last SELECT says whether the petition was
# open, so the caller can tell a closed petition from a wording version it must look up.
#
# new_supporter inserts the address unless it is on the suppression list (unique index on
# email_hash) or already a supporter: ON CONFLICT (email) DO NOTHING on the unique email
# index. A concurrent transaction inserting the same address makes this one wait for it;
# if that one commits, we insert nothing and return no ids, and the caller takes the ORM
# path, which then sees the committed supporter (and their signature): the database's
# uniqueness decides, never a 500 or a duplicate.
#
# The new supporter's email_status is written as it ends up: :subscribed (STATUS_AFTER of
# opt_in) when they agreed to updates -- implied wording, or the box ticked -- else
# 'never_subscribed', the same row the ORM path leaves after its insert and update; the
# opt_in event is written for exactly those.
#
# new_signature and new_event read the new supporter's id from new_supporter, so they add
# nothing when it added nothing. A brand-new supporter cannot have signed before, so there
# is no signature lookup. The consent event carries the wording, its version and id, the IP
# and user agent, exactly as crm.supporters.consent.record_consent() writes it.
#
# new_outbound stores the outbound events of the new signature and the new subscriber (the
# ones the ORM path emits, with the same data) in the outbox, in this same statement, so
# the fact and its event commit together (crm/events.py); :event_signature and
# :event_subscribed say whether any webhook endpoint wants them (no rows at all when none do).
#
# EXPLAIN ANALYZE (bench database): target is a nested loop of two one-row lookups (sequential
# scans while petition and consent_wording hold a handful of rows; their primary key and the
# (petition_id, version) unique index beyond that), materialised once for its two readers;
# the suppression probe is an InitPlan on uq_suppression_email_hash; Insert on supporter with
# Conflict Arbiter Indexes: uq_supporter_email; the other inserts scan the one-row CTEs. Most
# of the time goes to the five foreign-key triggers. About 0.3 ms of PostgreSQL CPU per new
# signer under the signing bench's load, commit included.
SIGN_NEW_SUPPORTER = text("""
WITH target AS (
    SELECT w.id, w.version, w.text, (w.mode = 'implied' OR :consent_ticked) AS wants_updates
    FROM petition p
    JOIN consent_wording w ON w.petition_id = p.id
                          AND w.version = COALESCE(CAST(:wording_version AS integer), p.consent_wording_version)
    WHERE p.id = :petition_id AND p.status = 'open' AND NOT p.double_opt_in
), new_supporter AS (
    INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
                           custom_fields, notes, created_at, updated_at)
    SELECT :email, :first_name, :last_name, :postal_code, :country,
           CASE WHEN t.wants_updates THEN :subscribed ELSE 'never_subscribed' END,
           :supporter_source, '{}', '', :now, :now
    FROM target t
    WHERE NOT EXISTS (SELECT 1 FROM suppression WHERE email_hash = :email_hash)
    ON CONFLICT (email) DO NOTHING
    RETURNING id
), new_signature AS (
    INSERT INTO signature (petition_id, supporter_id, comment, source, utm_source, utm_medium, utm_campaign,
                           referrer_host, created_at)
    SELECT :petition_id, id, :comment, :signature_source, :utm_source, :utm_medium, :utm_campaign,
           :referrer_host, :now FROM new_supporter
    RETURNING id, petition_id, supporter_id
), new_event AS (
    INSERT INTO consent_event (supporter_id, action, source, wording, wording_version, wording_id,
                               reason, ip, user_agent, created_at)
    SELECT s.id, 'opt_in', :event_source, t.text, t.version, t.id, '', :ip, :user_agent, :now
    FROM new_supporter s, target t
    WHERE t.wants_updates
    RETURNING id
), new_outbound AS (
    INSERT INTO outbound_event (event_type, data, created_at)
    SELECT 'signature.created',
           json_build_object('petition_id', g.petition_id, 'petition_slug', CAST(:petition_slug AS text),
                             'signature_id', g.id, 'supporter_id', g.supporter_id), :now
    FROM new_signature g
    WHERE :event_signature
    UNION ALL
    SELECT 'supporter.subscribed',
           json_build_object('campaign_id', NULL, 'source', CAST(:event_source AS text), 'supporter_id', s.id), :now
    FROM new_supporter s, new_event e
    WHERE :event_subscribed
    RETURNING id
)
SELECT (SELECT id FROM new_supporter) AS supporter_id,
       (SELECT id FROM new_signature) AS signature_id,
       (SELECT id FROM new_event) AS consent_event_id,
       EXISTS (SELECT 1 FROM new_outbound) AS events_stored,
       EXISTS (SELECT 1 FROM petition WHERE id = :petition_id AND status = 'open') AS petition_open
""")
