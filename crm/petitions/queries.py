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

# PostgreSQL only (data-modifying CTEs). One statement, so one round trip, and atomic on its own.
#
# new_supporter inserts the address unless it is on the suppression list (unique index on
# email_hash) or already a supporter: ON CONFLICT (email) DO NOTHING on the unique email
# index. A concurrent transaction inserting the same address makes this one wait for it;
# if that one commits, we insert nothing and return no ids, and the caller takes the ORM
# path, which then sees the committed supporter (and their signature): the database's
# uniqueness decides, never a 500 or a duplicate.
#
# The new supporter's email_status is written as it ends up: 'subscribed' when they agreed
# to updates (the opt_in event below; STATUS_AFTER["opt_in"]), else 'never_subscribed' --
# the same row the ORM path leaves after its insert and update.
#
# new_signature and new_event read the new supporter's id from new_supporter, so they add
# nothing when it added nothing. A brand-new supporter cannot have signed before, so there
# is no signature lookup. The consent event carries the wording, its version and id, the IP
# and user agent, exactly as crm.supporters.consent.record_consent() writes it.
#
# EXPLAIN ANALYZE (200k signatures): Insert on supporter, Conflict Arbiter Indexes:
# uq_supporter_email; the suppression probe is an InitPlan on uq_suppression_email_hash (a
# seq scan while the list is nearly empty); the two other inserts scan the one-row CTE.
# About 2 ms in all, most of it the foreign-key triggers (petition, supporter, wording).
SIGN_NEW_SUPPORTER = text("""
WITH new_supporter AS (
    INSERT INTO supporter (email, first_name, last_name, postal_code, country, email_status, source,
                           custom_fields, notes, created_at, updated_at)
    SELECT :email, :first_name, :last_name, :postal_code, :country, :email_status, :supporter_source,
           '{}', '', :now, :now
    WHERE NOT EXISTS (SELECT 1 FROM suppression WHERE email_hash = :email_hash)
    ON CONFLICT (email) DO NOTHING
    RETURNING id
), new_signature AS (
    INSERT INTO signature (petition_id, supporter_id, comment, source, created_at)
    SELECT :petition_id, id, :comment, :signature_source, :now FROM new_supporter
    RETURNING id
), new_event AS (
    INSERT INTO consent_event (supporter_id, action, source, wording, wording_version, wording_id,
                               reason, ip, user_agent, created_at)
    SELECT id, 'opt_in', :event_source, :wording, :wording_version, :wording_id, '', :ip, :user_agent, :now
    FROM new_supporter WHERE :wants_updates
    RETURNING id
)
SELECT (SELECT id FROM new_supporter) AS supporter_id,
       (SELECT id FROM new_signature) AS signature_id,
       (SELECT id FROM new_event) AS consent_event_id
""")
