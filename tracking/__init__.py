"""Open and click tracking: signed pixel and redirect links, recorded to Redis, flushed in batches.

The request path (/o/<token>, /c/<token>/<i>) writes nothing to the database: it appends one
entry to a Redis stream and answers. A periodic flush (workers/periodic.py, or `crm tracking
flush`) reads the stream in batches through a consumer group, writes `engagement_event` rows
and the message's first-open and first-click times in one transaction, and acknowledges the
entries only after that commit, so a worker killed mid-flush loses nothing.
"""
