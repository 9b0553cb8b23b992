-- API keys record how they were made: `legacy` keys (64 random hex digits, made before this
-- version) or `tagged` keys (48 random hex digits and a check tag, see `src/key.rs`). Existing
-- rows are legacy. The gateway refuses a key whose check tag does not verify without a
-- database lookup unless unrevoked legacy keys exist, which it finds with the index below.

ALTER TABLE api_keys ADD COLUMN format TEXT NOT NULL DEFAULT 'legacy'
    CHECK (format IN ('legacy', 'tagged'));

CREATE INDEX api_keys_unrevoked_legacy ON api_keys (id)
    WHERE format = 'legacy' AND revoked_at IS NULL;
