select strata_sk(operating_period_id) as operating_period_sk,
       operating_period_id,
       strata_sk(organization_id) as organization_sk,
       to_char(start_at at time zone 'UTC', 'YYYYMMDD')::int as start_date_sk,
       start_at,
       finish_at,
       extract(epoch from finish_at - start_at) / 60.0 as duration_minutes,
       created_at,
       deleted_at,
       is_deleted
from dev.in_periods
