-- Schema v45: an API token may be a metrics token, which reads /metrics
-- and nothing else (the one a scraper holds).
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check CHECK (scope IN ('read', 'write', 'metrics'));
