-- Distinct events of this delivery. The kept copy of an event is its first in
-- (source_key, line_number, batch_id) order among the new copies and the published row —
-- chosen on narrow rows, then joined to its content. Emitted: events not yet published,
-- events whose first copy changes, and events of batches being reprocessed; an exact
-- duplicate of a published event changes nothing.
with copies as (
    select event_key, batch_id, source_key, line_number, false as is_published
    from dev.in_events
    union all
    select p.event_key, p.batch_id, p.source_key, p.line_number, true
    from prod.stg_events as p
    where p.event_key in (select event_key from dev.in_events)
),
first_copy as (
    select distinct on (event_key) event_key, batch_id, line_number, is_published
    from copies
    order by event_key, source_key, line_number, batch_id
)
select f.event_key, e.event as event_name, e."on" as entity_type, e.at as event_at,
       e.entity_id, e.organization_id, e.location_lat, e.location_lng, e.location_at,
       e.period_start as period_start_at, e.period_finish as period_finish_at, e.extra,
       e.batch_id, e.source_key, e.line_number, e.ingested_at
from first_copy as f
join dev.in_events as e on e.batch_id = f.batch_id and e.line_number = f.line_number
where not f.is_published
   or f.batch_id in (select batch_id from dev.reprocess_batches)
