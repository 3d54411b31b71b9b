-- Periods touched by new events, from their whole history. The latest create or delete
-- decides whether a period is deleted (a period created again after a delete is live; at one
-- instant the delete wins); its window comes from its latest create.
with created as (
    select distinct on (entity_id)
           entity_id, organization_id, event_at, period_start_at, period_finish_at
    from dev.in_period_history
    where event_name = 'create'
    order by entity_id, event_at desc, event_key
),
deleted as (
    select distinct on (entity_id)
           entity_id, organization_id, event_at, period_start_at, period_finish_at
    from dev.in_period_history
    where event_name = 'delete'
    order by entity_id, event_at desc, event_key
)
select coalesce(c.entity_id, d.entity_id) as operating_period_id,
       coalesce(c.organization_id, d.organization_id) as organization_id,
       coalesce(c.period_start_at, d.period_start_at) as start_at,
       coalesce(c.period_finish_at, d.period_finish_at) as finish_at,
       c.event_at as created_at,
       d.event_at as deleted_at,
       d.entity_id is not null and (c.entity_id is null or d.event_at >= c.event_at)
           as is_deleted
from created as c
full join deleted as d on d.entity_id = c.entity_id
