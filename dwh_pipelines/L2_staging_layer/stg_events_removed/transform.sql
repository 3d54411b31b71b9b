-- Every keyed row that is not the kept copy of its event: a duplicate of a copy in this
-- delivery, or of an event already published.
with kept as (
    select distinct on (event_key) event_key, batch_id, line_number, is_published
    from (
        select event_key, batch_id, source_key, line_number, false as is_published
        from dev.stg_events_keyed
        union all
        select p.event_key, p.batch_id, p.source_key, p.line_number, true
        from prod.stg_events as p
        where p.event_key in (select event_key from dev.stg_events_keyed)
    ) as copies
    order by event_key, source_key, line_number, batch_id
)
select k.batch_id, k.line_number, k.event_key,
       case when exists (select 1 from prod.stg_events as p where p.event_key = k.event_key)
            then 'duplicate_of_published' else 'duplicate_in_delivery' end as reason
from dev.stg_events_keyed as k
join kept on kept.event_key = k.event_key
where (k.batch_id, k.line_number) <> (kept.batch_id, kept.line_number)
