-- Prices per model (per million tokens, in millionths of the currency: exact integers) and
-- each usage row's cost at the prices of its moment, in billionths (NULL: no price known).
ALTER TABLE model_configs ADD COLUMN input_price_micros INTEGER NULL;
ALTER TABLE model_configs ADD COLUMN output_price_micros INTEGER NULL;
ALTER TABLE usage_metrics ADD COLUMN cost_nanos INTEGER NULL;
