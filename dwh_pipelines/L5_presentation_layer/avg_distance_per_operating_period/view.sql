select p.operating_period_id,
       o.organization_id,
       p.start_at,
       p.finish_at,
       count(*) as vehicles,
       sum(f.distance_km order by f.vehicle_id) as total_distance_km,
       avg(f.distance_km order by f.vehicle_id) as avg_distance_km
from prod.fct_vehicle_operating_periods as f
join prod.dim_operating_period as p using (operating_period_sk)
join prod.dim_organization as o on o.organization_sk = p.organization_sk
where not p.is_deleted and f.updates > 0
group by p.operating_period_id, o.organization_id, p.start_at, p.finish_at
