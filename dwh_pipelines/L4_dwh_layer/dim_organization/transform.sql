select strata_sk(organization_id) as organization_sk, organization_id, first_seen_at, last_seen_at
from dev.in_organizations
