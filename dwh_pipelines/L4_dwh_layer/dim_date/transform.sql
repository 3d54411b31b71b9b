with days as (
    select distinct (location_at at time zone 'UTC')::date as calendar_date from dev.in_locations
    union
    select (start_at at time zone 'UTC')::date from dev.in_periods
    union
    select (finish_at at time zone 'UTC')::date from dev.in_periods
)
select to_char(d.calendar_date, 'YYYYMMDD')::int as date_sk,
       d.calendar_date,
       extract(year from d.calendar_date)::int as year,
       extract(quarter from d.calendar_date)::int as quarter,
       extract(month from d.calendar_date)::int as month,
       extract(day from d.calendar_date)::int as day_of_month,
       extract(isodow from d.calendar_date)::int as iso_day_of_week,
       extract(week from d.calendar_date)::int as iso_week,
       extract(isodow from d.calendar_date) >= 6 as is_weekend
from days as d
where not exists (
    select 1 from prod.dim_date as p where p.date_sk = to_char(d.calendar_date, 'YYYYMMDD')::int
)
