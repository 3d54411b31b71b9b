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
    where p.vehicle_id in (select vehicle_id from rebroken)
      and p.event_key not in (select event_key from new_updates)
),
flagged as (
    select u.*,
           exists (
               select 1 from dev.next_mdm_vehicle_breaks as b
               where b.vehicle_id = u.vehicle_id
                 and u.location_at >= b.break_start_at
                 and u.location_at <= coalesce(b.break_end_at, 'infinity')
           ) as is_in_break
    from (select * from new_updates union all select * from published) as u
)
select event_key, vehicle_id, organization_id, location_at, event_at, location_lat, location_lng,
       is_in_break
from flagged
where was_in_break is distinct from is_in_break or was_in_break is null
