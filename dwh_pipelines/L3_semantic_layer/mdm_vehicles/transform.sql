-- Vehicles with new lifecycle or break events (their history is in dev.in_vehicle_history)
-- and vehicles not published yet.
with touched as (
    select entity_id as vehicle_id
    from dev.in_events
    where entity_type = 'vehicle' and event_name <> 'update'
    union
    (select entity_id from dev.in_events where entity_type = 'vehicle'
     except
     select vehicle_id from prod.mdm_vehicles)
),
events as (
    select entity_id as vehicle_id,
           min(event_at) filter (where event_name = 'register') as registered_at,
           max(event_at) filter (where event_name = 'register') as last_registered_at,
           max(event_at) filter (where event_name = 'deregister') as last_deregistered_at,
           (array_agg(organization_id order by event_at, event_key)
               filter (where event_name = 'register'))[1] as registered_organization_id
    from dev.in_vehicle_history
    where event_name in ('register', 'deregister')
    group by entity_id
),
lifecycle as (  -- deregistered only while no register came after (at one instant: deregistered)
    select vehicle_id, registered_at, registered_organization_id,
           case when last_registered_at is null or last_deregistered_at >= last_registered_at
                then last_deregistered_at end as deregistered_at
    from events
),
first_at as (  -- hashed: a sort of every vehicle event cost twice as much
    select entity_id, min(event_at) as event_at
    from dev.in_events
    where entity_type = 'vehicle'
    group by entity_id
),
first_event as (
    select distinct on (e.entity_id) e.entity_id as vehicle_id, e.organization_id
    from dev.in_events as e
    join first_at as f using (entity_id, event_at)
    where e.entity_type = 'vehicle'
    order by e.entity_id, e.event_key
)
select t.vehicle_id,
       coalesce(l.registered_organization_id, p.organization_id, f.organization_id)
           as organization_id,
       l.registered_at,
       l.deregistered_at,
       case
           when l.deregistered_at is not null then 'deregistered'
           when l.registered_at is not null then 'registered'
           else 'unregistered'
       end as lifecycle_status
from touched as t
left join lifecycle as l using (vehicle_id)
left join prod.mdm_vehicles as p using (vehicle_id)
left join first_event as f using (vehicle_id)
