-- New updates, plus the published updates of vehicles whose breaks were recomputed when
-- their break flag changes.
with rebroken as (
    select distinct entity_id as vehicle_id
    from dev.in_vehicle_history
    where event_name in ('break_start', 'break_end')
),
new_updates as (
    select e.event_key, e.entity_id as vehicle_id, e.organization_id, e.location_at, e.event_at,
           e.location_lat, e.location_lng, null::boolean as was_in_break
    from dev.in_events as e
    where e.event_name = 'update' and e.location_at is not null
      and e.location_lat is not null and e.location_lng is not null
),
published as (
    select p.event_key, p.vehicle_id, p.organization_id, p.location_at, p.event_at,
           p.location_lat, p.location_lng, p.is_in_break as was_in_break
    from prod.mdm_vehicle_locations as p
    join rebroken as r using (vehicle_id)
    where not exists (select 1 from new_updates as n where n.event_key = p.event_key)
),
candidates as (
    select * from new_updates
    union all
    select * from published
),
in_break as (  -- one set-based join: updates against their vehicle's breaks
    select distinct c.event_key
    from candidates as c
    join dev.next_mdm_vehicle_breaks as b
      on b.vehicle_id = c.vehicle_id
     and c.location_at >= b.break_start_at
     and c.location_at <= coalesce(b.break_end_at, 'infinity')
)
select c.event_key, c.vehicle_id, c.organization_id, c.location_at, c.event_at, c.location_lat,
       c.location_lng, i.event_key is not null as is_in_break
from candidates as c
left join in_break as i using (event_key)
where c.was_in_break is distinct from (i.event_key is not null)
