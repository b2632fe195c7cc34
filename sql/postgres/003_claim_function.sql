-- A round's slot in one round trip (store/cluster.py): the per-user lock, forgetting dead
-- instances' rounds, the count and the insert run inside the function's own transaction,
-- so the lock is held for microseconds instead of five network round trips.
-- Returns the new slot's id (NULL: the user is at `max_rounds`) and whether another live
-- instance runs a round of the session (then it must be stopped before this one starts).
CREATE FUNCTION aichat_claim(me integer, owner bigint, session bigint, max_rounds integer,
                             OUT claim_id bigint, OUT elsewhere boolean)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(2, owner::integer);
    DELETE FROM live_rounds
     WHERE user_id = owner AND instance_id <> me
       AND pg_try_advisory_xact_lock(1, instance_id);
    elsewhere := session IS NOT NULL AND EXISTS (
        SELECT 1 FROM live_rounds WHERE session_id = session AND instance_id <> me);
    IF (SELECT COUNT(*) FROM live_rounds
         WHERE user_id = owner
           AND (session IS NULL OR session_id IS NULL OR session_id <> session)) >= max_rounds
    THEN
        claim_id := NULL;
        RETURN;
    END IF;
    INSERT INTO live_rounds (instance_id, user_id, session_id) VALUES (me, owner, session)
    RETURNING id INTO claim_id;
END $$;
