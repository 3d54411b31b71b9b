-- All breaks of the vehicles with new lifecycle/break events, from their whole history.
with events as (
    select entity_id as vehicle_id, event_name, event_at
    from dev.in_vehicle_history
    where event_name in ('break_start', 'break_end')
),
starts as (
    select vehicle_id, event_at as break_start_at,
           lead(event_at) over (partition by vehicle_id order by event_at) as next_start_at
    from events
    where event_name = 'break_start'
)
select s.vehicle_id, s.break_start_at,
       (select min(e.event_at) from events as e
        where e.vehicle_id = s.vehicle_id and e.event_name = 'break_end'
          and e.event_at >= s.break_start_at
          and (s.next_start_at is null or e.event_at < s.next_start_at)) as break_end_at
from starts as s
