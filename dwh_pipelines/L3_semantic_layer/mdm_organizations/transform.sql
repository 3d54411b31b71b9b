-- Organizations touched by new events; the span widens with the published one (min/max, so
-- the result is the same in any order).
with spans as (
    select organization_id, min(event_at) as first_seen_at, max(event_at) as last_seen_at
    from dev.in_events
    group by organization_id
    union all
    select p.organization_id, p.first_seen_at, p.last_seen_at
    from prod.mdm_organizations as p
    where p.organization_id in (select organization_id from dev.in_events)
)
select organization_id, min(first_seen_at) as first_seen_at, max(last_seen_at) as last_seen_at
from spans
group by organization_id
