-- sql/010_prices_and_cost.sql for PostgreSQL.
ALTER TABLE model_configs ADD COLUMN input_price_micros BIGINT NULL;
ALTER TABLE model_configs ADD COLUMN output_price_micros BIGINT NULL;
ALTER TABLE usage_metrics ADD COLUMN cost_nanos BIGINT NULL;
