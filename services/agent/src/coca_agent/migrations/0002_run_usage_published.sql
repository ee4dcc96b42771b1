-- A run's usage record is published to Kafka `usage.records` after the run ends; this column says
-- when Kafka acknowledged it. Ended runs with tokens and no publication are republished by the
-- agent's usage sweeper (same event id, so billing counts them once).
ALTER TABLE runs ADD COLUMN usage_published_at timestamptz;
UPDATE runs SET usage_published_at = finished_at WHERE finished_at IS NOT NULL;
CREATE INDEX runs_usage_unpublished_idx ON runs (finished_at)
    WHERE finished_at IS NOT NULL AND usage_published_at IS NULL;
