-- Static: written once, by the first publish.
select h * 100 + m as time_sk, h as hour, m as minute,
       case when h < 6 then 'night' when h < 12 then 'morning'
            when h < 18 then 'afternoon' else 'evening' end as day_part
from generate_series(0, 23) as h, generate_series(0, 59) as m
where not exists (select 1 from prod.dim_time)
