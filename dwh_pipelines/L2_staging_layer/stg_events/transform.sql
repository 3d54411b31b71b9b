-- Distinct events of this delivery, with the lineage of their first copy in
-- (source_key, line_number, batch_id) order among the new copies and the published row.
-- Emitted: events not yet published, events whose first copy changes, and events of batches
-- being reprocessed; an exact duplicate of a published event changes nothing.
with incoming as (
    select k.event_key, e.event as event_name, e."on" as entity_type, e.at as event_at,
           e.entity_id, e.organization_id, e.location_lat, e.location_lng, e.location_at,
           e.period_start as period_start_at, e.period_finish as period_finish_at, e.extra,
           e.batch_id, e.source_key, e.line_number, e.ingested_at
    from dev.stg_events_keyed as k
    join dev.in_events as e on e.batch_id = k.batch_id and e.line_number = k.line_number
),
candidates as (
    select *, false as is_published from incoming
    union all
    select p.event_key, p.event_name, p.entity_type, p.event_at, p.entity_id, p.organization_id,
           p.location_lat, p.location_lng, p.location_at, p.period_start_at, p.period_finish_at,
           p.extra, p.batch_id, p.source_key, p.line_number, p.ingested_at, true
    from prod.stg_events as p
    where p.event_key in (select event_key from dev.stg_events_keyed)
),
first_copy as (
    select distinct on (event_key) *
    from candidates
    order by event_key, source_key, line_number, batch_id
)
select event_key, event_name, entity_type, event_at, entity_id, organization_id, location_lat,
       location_lng, location_at, period_start_at, period_finish_at, extra, batch_id, source_key,
       line_number, ingested_at
from first_copy as f
where not f.is_published
   or f.batch_id in (select batch_id from dev.reprocess_batches)
