-- Versions of the vehicles whose semantic row changed, from their lifecycle timestamps.
with versions as (
    select vehicle_id, organization_id, 'unregistered' as lifecycle_status,
           '-infinity'::timestamptz as valid_from,
           coalesce(registered_at, deregistered_at, 'infinity') as valid_to
    from dev.in_vehicles
    union all
    select vehicle_id, organization_id, 'registered', registered_at,
           coalesce(deregistered_at, 'infinity')
    from dev.in_vehicles
    where registered_at is not null
    union all
    select vehicle_id, organization_id, 'deregistered', deregistered_at, 'infinity'
    from dev.in_vehicles
    where deregistered_at is not null
)
select strata_sk(vehicle_id || '|' || valid_from::text) as vehicle_sk,
       vehicle_id,
       strata_sk(organization_id) as organization_sk,
       organization_id,
       lifecycle_status,
       valid_from,
       valid_to,
       valid_to = 'infinity' as is_current
from versions
where valid_from < valid_to
