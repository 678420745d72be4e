"""What comes back after the send: bounces, complaints and unsubscribes, from relays' webhooks
and from the bounce mailbox, applied by one service.

    relay webhooks (feedback/views.py: /hooks/<provider>) ─┐  parse and authenticate only
    bounce mailbox (feedback/mailbox.py, feedback/dsn.py) ──┤  (feedback/providers/*.py)
                                                            └─> Feedback values (feedback/types.py)
    webhooks: feedback_intake (feedback/intake.py), one durable INSERT per request ─┐
                                  a worker applies it in batches ──────────────────┤
    the mailbox and the send loop apply directly ───────────────────────────────────┴─> apply_feedback()
                                                                     (feedback/apply.py): consent event,
                                                                     message row, email status,
                                                                     suppression; once per event id

Staff pages: the suppression list and list health (feedback/pages.py), provider settings
(feedback/settings.py). The send loop's own "user unknown" replies go through the same service.
"""
