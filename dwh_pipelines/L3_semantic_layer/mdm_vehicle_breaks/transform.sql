-- All breaks of the vehicles with new lifecycle/break events, from their whole history.
-- A vehicle is on break from a break_start until the next break_end: a break_start while it
-- is on break already (a retry, an overlap) changes nothing, and so does a break_end while
-- it is not. At one instant a break_start comes before a break_end.
with ordered as (
    select entity_id as vehicle_id, event_name, event_at,
           lag(event_name) over w as previous_name,
           row_number() over w as position
    from dev.in_vehicle_history
    where event_name in ('break_start', 'break_end')
    window w as (partition by entity_id
                 order by event_at, event_name = 'break_end', event_key)
),
starts as (
    select vehicle_id, event_at as break_start_at, position
    from ordered
    where event_name = 'break_start' and previous_name is distinct from 'break_start'
)
select s.vehicle_id, s.break_start_at,
       (select min(e.event_at) from ordered as e
        where e.vehicle_id = s.vehicle_id and e.event_name = 'break_end'
          and e.position > s.position) as break_end_at
from starts as s
