-- The (period, vehicle) pairs touched by this run, recomputed from all their updates.
with touched as (
    -- updates added or changed in this run
    select p.operating_period_sk, f.vehicle_id
    from dev.fct_vehicle_location_updates as f
    join dev.next_dim_operating_period as p
      on p.organization_sk = f.organization_sk and f.location_at between p.start_at and p.finish_at
    union
    -- periods added or changed: every vehicle of the organization with updates inside
    select p.operating_period_sk, f.vehicle_id
    from dev.dim_operating_period as p
    join dev.next_fct_vehicle_location_updates as f
      on f.organization_sk = p.organization_sk and f.location_at between p.start_at and p.finish_at
    union
    -- pairs published for those periods (they may have lost their updates)
    select f.operating_period_sk, f.vehicle_id
    from prod.fct_vehicle_operating_periods as f
    where f.operating_period_sk in (select operating_period_sk from dev.dim_operating_period)
),
points as (
    select t.operating_period_sk, t.vehicle_id, f.vehicle_sk, f.location_at, f.location_lat,
           f.location_lng, f.is_in_break
    from touched as t
    join dev.next_dim_operating_period as p using (operating_period_sk)
    join dev.next_fct_vehicle_location_updates as f
      on f.vehicle_id = t.vehicle_id and f.organization_sk = p.organization_sk
     and f.location_at between p.start_at and p.finish_at
),
segments as (
    select operating_period_sk, vehicle_id, vehicle_sk, location_at, location_lat, location_lng,
           case
               when lag(location_at) over w is not null
                    and not (is_in_break or lag(is_in_break) over w)
               then haversine_km(lag(location_lat) over w, lag(location_lng) over w,
                                 location_lat, location_lng)
           end as segment_km
    from points
    window w as (partition by operating_period_sk, vehicle_id
                 order by location_at, location_lat, location_lng)
),
totals as (
    select operating_period_sk, vehicle_id,
           count(*) as updates,
           coalesce(sum(segment_km order by location_at, location_lat, location_lng), 0)
               as distance_km,
           min(location_at) as first_seen_at,
           max(location_at) as last_seen_at,
           (array_agg(vehicle_sk order by location_at, location_lat, location_lng))[1]
               as vehicle_sk
    from segments
    group by operating_period_sk, vehicle_id
)
select t.operating_period_sk, t.vehicle_id, s.vehicle_sk, p.organization_sk, p.start_date_sk,
       coalesce(s.updates, 0) as updates, coalesce(s.distance_km, 0) as distance_km,
       s.first_seen_at, s.last_seen_at
from touched as t
join dev.next_dim_operating_period as p using (operating_period_sk)
left join totals as s using (operating_period_sk, vehicle_id)
