-- Principals may have the `metrics` role: they read the operator surfaces (`/metrics`) and
-- nothing else. PostgreSQL named the inline CHECK of 0001 `principals_role_check`.

ALTER TABLE principals DROP CONSTRAINT principals_role_check;
ALTER TABLE principals ADD CONSTRAINT principals_role_check
    CHECK (role IN ('user', 'admin', 'auditor', 'metrics'));
