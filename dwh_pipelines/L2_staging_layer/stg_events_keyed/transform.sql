-- The content key: md5 of the event's text form (row(...)::text distinguishes NULL from '').
-- Sessions run in UTC, so timestamps have one text form.
select
    md5(row(
        e.event, e."on", e.at, e.entity_id, e.organization_id, e.location_lat, e.location_lng,
        e.location_at, e.period_start, e.period_finish, e.extra
    )::text) as event_key,
    e.batch_id,
    e.source_key,
    e.line_number
from dev.in_events as e
