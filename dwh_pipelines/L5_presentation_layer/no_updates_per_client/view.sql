select o.organization_id,
       d.calendar_date as update_date,
       date_trunc('hour', f.location_at) as hour_start_at,
       count(*) as updates
from prod.fct_vehicle_location_updates as f
join prod.dim_organization as o using (organization_sk)
join prod.dim_date as d using (date_sk)
group by o.organization_id, d.calendar_date, date_trunc('hour', f.location_at)
