with latest_hour as (
    select f.*
    from prod.fct_vehicle_location_updates as f
    where f.location_at > (select max(location_at) from prod.fct_vehicle_location_updates)
                          - interval '1 hour'
),
top_organization as (
    select organization_sk from latest_hour
    group by organization_sk order by count(*) desc, organization_sk limit 1
),
busiest_vehicle as (
    select vehicle_id from latest_hour
    where organization_sk = (select organization_sk from top_organization)
    group by vehicle_id order by count(*) desc, vehicle_id limit 1
)
select o.organization_id,
       h.vehicle_id,
       row_number() over (order by h.location_at, h.location_update_sk) as position,
       h.location_at,
       h.location_lat,
       h.location_lng,
       h.is_in_break
from latest_hour as h
join prod.dim_organization as o using (organization_sk)
where h.vehicle_id = (select vehicle_id from busiest_vehicle)
  and h.organization_sk = (select organization_sk from top_organization)
