-- New and changed updates, plus the published updates of vehicles whose versions changed
-- (they may now belong to another version). The changed vehicles are found first (a handful,
-- often none), so only their published updates are read, through the (vehicle_id, location_at)
-- index.
with changed_vehicles as materialized (
    select distinct vehicle_id from (
        (select vehicle_id, vehicle_sk, valid_to from dev.dim_vehicle
         except
         select p.vehicle_id, p.vehicle_sk, p.valid_to from prod.dim_vehicle as p
         where p.vehicle_id in (select vehicle_id from dev.dim_vehicle))
        union all
        (select p.vehicle_id, p.vehicle_sk, p.valid_to from prod.dim_vehicle as p
         where p.vehicle_id in (select vehicle_id from dev.dim_vehicle)
         except
         select vehicle_id, vehicle_sk, valid_to from dev.dim_vehicle)
    ) as differences
),
changed_updates as materialized (
    select f.event_key, f.vehicle_id, f.organization_sk, f.location_at, f.event_at,
           f.location_lat, f.location_lng, f.is_in_break
    from changed_vehicles as c
    join prod.fct_vehicle_location_updates as f on f.vehicle_id = c.vehicle_id
),
updates as (
    select l.event_key, l.vehicle_id, strata_sk(l.organization_id) as organization_sk,
           l.location_at, l.event_at, l.location_lat, l.location_lng, l.is_in_break
    from dev.in_locations as l
    union all
    select f.event_key, f.vehicle_id, f.organization_sk, f.location_at, f.event_at,
           f.location_lat, f.location_lng, f.is_in_break
    from changed_updates as f
    where not exists (select 1 from dev.in_locations as l where l.event_key = f.event_key)
)
-- date_part (double precision) rather than extract (numeric) or to_char: same keys, half the
-- cost per row
select strata_sk(u.event_key) as location_update_sk,
       u.event_key,
       v.vehicle_sk,
       u.vehicle_id,
       u.organization_sk,
       (date_part('year', u.location_at at time zone 'UTC') * 10000
        + date_part('month', u.location_at at time zone 'UTC') * 100
        + date_part('day', u.location_at at time zone 'UTC'))::int as date_sk,
       (date_part('hour', u.location_at at time zone 'UTC') * 100
        + date_part('minute', u.location_at at time zone 'UTC'))::int as time_sk,
       u.location_at,
       u.event_at,
       u.location_lat,
       u.location_lng,
       u.is_in_break
from updates as u
left join dev.next_dim_vehicle as v
  on v.vehicle_id = u.vehicle_id and u.location_at >= v.valid_from and u.location_at < v.valid_to
