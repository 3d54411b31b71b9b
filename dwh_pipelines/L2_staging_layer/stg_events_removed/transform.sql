-- Every keyed row that is not the kept copy of its event: a duplicate of a copy in this
-- delivery, or of an event already published.
select k.batch_id, k.line_number, k.event_key,
       case when exists (select 1 from prod.stg_events as p where p.event_key = k.event_key)
            then 'duplicate_of_published' else 'duplicate_in_delivery' end as reason
from dev.stg_events_keyed as k
where not exists (
    select 1 from dev.stg_events as s
    where s.batch_id = k.batch_id and s.line_number = k.line_number
)
