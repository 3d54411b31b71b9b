-- Every incoming row that is not the kept copy of its event: a duplicate of a copy in this
-- delivery, or of an event already published. Only events with more than one copy can lose
-- one, so those are found first (a hashed count, no join over every row).
with copied as (
    select event_key from dev.in_events group by event_key having count(*) > 1
    union
    select k.event_key from dev.in_events as k
    where exists (select 1 from prod.stg_events as p where p.event_key = k.event_key)
)
select k.batch_id, k.line_number, k.event_key,
       case when exists (select 1 from prod.stg_events as p where p.event_key = k.event_key)
            then 'duplicate_of_published' else 'duplicate_in_delivery' end as reason
from dev.in_events as k
join copied as c using (event_key)
where not exists (
    select 1 from dev.stg_events as s
    where s.batch_id = k.batch_id and s.line_number = k.line_number
)
