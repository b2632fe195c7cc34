-- registration_enabled is no longer stored at start: while no admin has chosen, it follows
-- APP_MODE (true in multi mode, false in single), as on a fresh start in that mode. Until now
-- each start stored the mode's default unless a row existed, so a data folder first started in
-- single mode kept registration closed after a switch to multi. Those stored defaults go here.
--
-- Telling them from an admin's choice: the start-up insert ran before any request and never
-- updated a row, and PUT /api/settings/system always found that row and moved its updated_at
-- (even when writing the same value). So a row whose updated_at still equals its created_at was
-- written by the start-up insert only. A row an admin wrote, whatever its value, stays.
-- From now on every row of system_settings is an admin's choice.

DELETE FROM system_settings
WHERE key = 'registration_enabled' AND created_at = updated_at;
